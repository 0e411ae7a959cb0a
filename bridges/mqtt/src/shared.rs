//! State shared by every MQTT connection of one listener: the session registry
//! (for takeover, and for the parts of a session that outlive a connection) and
//! the retained-message stores.
//!
//! A session's queue and bindings live in the core and survive restarts. What
//! lives here, in memory, survives reconnects only: QoS 2 packet ids in flight in
//! either direction, the packet ids of deliveries that were unacknowledged when the
//! connection ended (so they are resent with the same id and DUP set), shared
//! subscriptions, and a pending delayed will.
//!
//! Locks: the registry map lock is held only to find or insert a slot; a slot's
//! lock is never held across an `.await` and never while taking another lock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use switchyard::BrokerHandle;
use switchyard::queue::ConnectionId;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::codec::SubOptions;
use crate::config::MqttConfig;
use crate::retained::{RetainedStore, path_for};

/// The connection currently attached to a session.
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) connection: ConnectionId,
    /// Cancelled to make the connection end because another took the session over.
    pub(crate) kick: CancellationToken,
    /// Resolves (by being dropped) once the connection has released everything.
    pub(crate) done: oneshot::Receiver<()>,
}

/// A shared subscription to restore when a persistent session reconnects.
#[derive(Debug, Clone)]
pub(crate) struct SharedSub {
    pub(crate) group: String,
    pub(crate) filter: String,
    pub(crate) options: SubOptions,
    pub(crate) id: Option<u32>,
}

/// Session state that outlives one connection (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    pub(crate) owner: Option<Owner>,
    /// QoS 2 PUBLISHes received (PUBREC sent), waiting for PUBREL: a repeat is not republished.
    pub(crate) inbound_qos2: HashSet<u16>,
    /// QoS 2 deliveries acknowledged with PUBREC (PUBREL sent), waiting for PUBCOMP.
    pub(crate) outbound_qos2: BTreeSet<u16>,
    /// Packet ids of deliveries unacknowledged at disconnect, by (queue, sequence number).
    pub(crate) resend_ids: HashMap<(String, u64), u16>,
    /// Shared subscriptions of a persistent session.
    pub(crate) shared_subs: Vec<SharedSub>,
    /// Cancels a delayed will if the client comes back in time.
    pub(crate) will_timer: Option<CancellationToken>,
}

impl SlotState {
    /// Forget everything (Clean Start).
    pub(crate) fn clear(&mut self) {
        self.inbound_qos2.clear();
        self.outbound_qos2.clear();
        self.resend_ids.clear();
        self.shared_subs.clear();
    }
}

/// One client id's slot.
#[derive(Debug, Default)]
pub(crate) struct SessionSlot {
    pub(crate) state: Mutex<SlotState>,
}

/// Everything the listener's connections share.
#[derive(Debug)]
pub struct Shared {
    pub(crate) broker: BrokerHandle,
    pub(crate) cfg: Arc<MqttConfig>,
    sessions: Mutex<HashMap<(String, String), Arc<SessionSlot>>>,
    retained: Mutex<HashMap<String, Arc<RetainedStore>>>,
}

impl Shared {
    /// Shared state for a listener on `broker` with `cfg`.
    pub fn new(broker: BrokerHandle, cfg: MqttConfig) -> Arc<Shared> {
        Arc::new(Shared {
            broker,
            cfg: Arc::new(cfg),
            sessions: Mutex::new(HashMap::new()),
            retained: Mutex::new(HashMap::new()),
        })
    }

    /// The retained-message store of `vhost`, opened on first use.
    pub fn retained(&self, vhost: &str) -> Arc<RetainedStore> {
        let mut map = self.retained.lock();
        if let Some(s) = map.get(vhost) {
            return Arc::clone(s);
        }
        let path = path_for(&self.broker.config().data_dir, vhost);
        let store = RetainedStore::open(Some(path), self.cfg.max_retained);
        map.insert(vhost.to_string(), Arc::clone(&store));
        store
    }

    /// Attach `connection` to the session of `client_id` in `vhost`. Returns the slot and,
    /// if another connection held it, that connection's completion signal; the other
    /// connection has been told to end (its `kick` is cancelled).
    pub(crate) fn attach(
        &self,
        vhost: &str,
        client_id: &str,
        connection: ConnectionId,
        kick: CancellationToken,
        done: oneshot::Receiver<()>,
    ) -> (Arc<SessionSlot>, Option<oneshot::Receiver<()>>) {
        let slot = {
            let mut map = self.sessions.lock();
            Arc::clone(map.entry((vhost.to_string(), client_id.to_string())).or_default())
        };
        let previous = {
            let mut st = slot.state.lock();
            if let Some(t) = st.will_timer.take() {
                t.cancel();
            }
            st.owner.replace(Owner { connection, kick, done })
        };
        let waiting = previous.map(|p| {
            p.kick.cancel();
            p.done
        });
        (slot, waiting)
    }

    /// Detach `connection` from the session; the slot is forgotten when `keep` is false
    /// and no other connection took it over meanwhile.
    pub(crate) fn detach(
        &self,
        vhost: &str,
        client_id: &str,
        slot: &Arc<SessionSlot>,
        connection: ConnectionId,
        keep: bool,
    ) {
        let still_ours = {
            let mut st = slot.state.lock();
            if st.owner.as_ref().is_some_and(|o| o.connection == connection) {
                st.owner = None;
                true
            } else {
                false
            }
        };
        if still_ours && !keep {
            let mut map = self.sessions.lock();
            let key = (vhost.to_string(), client_id.to_string());
            if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot)) && slot.state.lock().owner.is_none() {
                map.remove(&key);
            }
        }
    }

    /// Number of sessions known (attached or kept for reconnection).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }
}
