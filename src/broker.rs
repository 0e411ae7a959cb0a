//! The broker: owns the vhosts, users and memory monitor, and hands front-ends
//! a cheap, cloneable [`BrokerHandle`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::auth::{User, Users};
use crate::config::{CoreConfig, SyncMode};
use crate::error::{CoreError, CoreResult, OpenError};
use crate::memory::{MemoryMonitor, physical_memory};
use crate::queue::ConnectionId;
use crate::store::{MessageLog, SyncPolicy};
use crate::vhost::Persistence;
use crate::vhost::VHost;

#[derive(Debug)]
struct Shared {
    config: CoreConfig,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    users: Users,
    memory: Arc<MemoryMonitor>,
    ids: Arc<AtomicU64>,
    log: MessageLog,
}

/// The running broker core. Dropping it without [`Broker::shutdown`] loses nothing
/// durable, but skips the final flush.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
}

/// A cheap handle for front-ends: clone it per connection.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    shared: Arc<Shared>,
}

impl Broker {
    /// Open the broker: create the data directory, load users, create vhosts.
    pub async fn open(config: CoreConfig) -> Result<Broker, OpenError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| OpenError::DataDir { path: config.data_dir.clone(), source })?;
        let users = Users::from_config(&config.users, &config.loopback_users)?;
        let high = match config.memory_high_watermark {
            0 => physical_memory() / 10 * 4,
            n => n,
        };
        let memory = MemoryMonitor::new(high);
        crate::memory::watch_disk(&memory, config.data_dir.clone(), config.disk_free_limit);
        let ids = Arc::new(AtomicU64::new(1));
        let policy = match config.sync {
            SyncMode::Always => SyncPolicy::Always,
            SyncMode::Batch => SyncPolicy::Batch(std::time::Duration::from_millis(config.sync_batch_ms)),
        };
        let log_dir = config.data_dir.join("messages");
        let (log, recovery) = MessageLog::open_deferred(&log_dir, policy, config.log_segment_bytes)
            .map_err(|e| OpenError::Definitions(format!("message log in {}: {e}", log_dir.display())))?;
        // A disk that falls behind blocks publishers instead of letting records pile up in memory.
        let alarm = Arc::clone(&memory);
        log.on_backlog(Box::new(move |on| alarm.set_log_alarm(on)));
        let persistence = Persistence {
            log: log.clone(),
            data_dir: config.data_dir.clone(),
            queue_resident_bytes: config.queue_resident_bytes,
        };
        let mut vhosts = HashMap::new();
        let names = if config.vhosts.is_empty() { vec!["/".to_string()] } else { config.vhosts.clone() };
        for name in names {
            let vhost = VHost::new(&name, Arc::clone(&memory), Arc::clone(&ids), Some(persistence.clone()));
            // Streams first: recovered stream queues attach to their streams.
            vhost.streams().load().map_err(OpenError::Definitions)?;
            vhost.load_definitions().map_err(OpenError::Definitions)?;
            vhosts.insert(name, vhost);
        }
        // Put recovered messages back, in log order and one segment at a time, into the
        // queues they belong to (queues page bodies out past their budget as they fill);
        // messages of queues that no longer exist are dropped, and so forgotten.
        let mut by_id = HashMap::new();
        for v in vhosts.values() {
            for q in v.queues() {
                if q.store_id() != 0 {
                    by_id.insert(q.store_id(), (Arc::clone(v), q));
                }
            }
        }
        let started = std::time::Instant::now();
        let mut restored = 0usize;
        let total = recovery
            .run(|r| {
                if let Some((v, q)) = by_id.get(&r.queue_id) {
                    v.restore_message(q, r);
                    restored += 1;
                }
            })
            .map_err(|e| OpenError::Definitions(format!("message log in {}: {e}", log_dir.display())))?;
        if total > 0 {
            tracing::info!(
                restored,
                dropped = total - restored,
                took_ms = started.elapsed().as_millis() as u64,
                "messages recovered from the log"
            );
        }
        tracing::info!(data_dir = %config.data_dir.display(), memory_high_watermark = high, "broker core open");
        Ok(Broker { shared: Arc::new(Shared { config, vhosts: RwLock::new(vhosts), users, memory, ids, log }) })
    }

    /// A handle for front-ends.
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle { shared: Arc::clone(&self.shared) }
    }

    /// Stop: fsync the message log and stop recording settlements, so tearing
    /// down queues afterwards loses nothing.
    pub async fn shutdown(self) {
        let log = self.shared.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
        tracing::info!("broker core stopped");
    }
}

impl BrokerHandle {
    /// Check a login from `peer`.
    pub fn authenticate(&self, user: &str, password: &str, peer: Option<IpAddr>) -> CoreResult<Arc<User>> {
        self.shared.users.authenticate(user, password, peer)
    }

    /// A vhost `user` may use: `NotAllowed` (AMQP 530) otherwise, with RabbitMQ's text.
    pub fn open_vhost(&self, name: &str, user: &User) -> CoreResult<Arc<VHost>> {
        let refused = || CoreError::not_allowed(format!("access to vhost '{name}' refused for user '{}'", user.name));
        let vhost = self.vhost(name).ok_or_else(|| CoreError::not_allowed(format!("vhost {name} not found")))?;
        if !user.can_access_vhost(name) {
            return Err(refused());
        }
        Ok(vhost)
    }

    /// A vhost by name.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.shared.vhosts.read().get(name).cloned()
    }

    /// A fresh broker-wide id for a connection.
    pub fn next_connection_id(&self) -> ConnectionId {
        self.shared.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The memory monitor (front-ends watch it to block publishers).
    pub fn memory(&self) -> &Arc<MemoryMonitor> {
        &self.shared.memory
    }

    /// The configuration the broker was opened with.
    pub fn config(&self) -> &CoreConfig {
        &self.shared.config
    }

    /// The message log: front-ends watch [`MessageLog::synced`] to release confirms.
    pub fn message_log(&self) -> &MessageLog {
        &self.shared.log
    }

    /// A connection ended: drop its exclusive queues everywhere.
    pub fn connection_closed(&self, connection: ConnectionId) {
        let vhosts: Vec<_> = self.shared.vhosts.read().values().cloned().collect();
        for v in vhosts {
            v.connection_closed(connection);
        }
    }
}
