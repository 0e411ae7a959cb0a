//! The core's configuration: what the binary reads from `[broker]` and `[[users]]`.
//!
//! Only values live here; reading files and environment is the binary's job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the core needs to open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// Directory for durable state (definitions now, message store later).
    pub data_dir: PathBuf,
    /// Virtual hosts created at start; the first is the default (`/`).
    pub vhosts: Vec<String>,
    /// Users and their per-vhost permissions. Empty means the RabbitMQ default:
    /// `guest`/`guest`, administrator, full permissions on `/`.
    pub users: Vec<UserConfig>,
    /// Users that may only connect from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// Memory used by queued message bodies above which publishers are blocked, in bytes.
    /// `0` picks 40% of physical memory, RabbitMQ's default `vm_memory_high_watermark`.
    pub memory_high_watermark: u64,
    /// Largest message body accepted from any front-end, in bytes.
    pub max_message_size: usize,
    /// When persistent messages are fsynced before they are confirmed:
    /// `always` (as soon as possible; concurrent publishers share one fsync) or
    /// `batch` (at most `sync_batch_ms` after the first unsynced one, for more sharing).
    pub sync: SyncMode,
    /// The longest a confirm waits for its fsync under `sync = "batch"`, in milliseconds.
    pub sync_batch_ms: u64,
    /// Publishers are blocked while the data directory's filesystem has less free space
    /// than this, in bytes (RabbitMQ's `disk_free_limit`, default 50 MB).
    pub disk_free_limit: u64,
    /// Bytes of ready message bodies one queue keeps in memory; beyond that, new
    /// messages are paged to the message log and only a small index stays in memory.
    pub queue_resident_bytes: u64,
    /// Size of one message log segment file, in bytes (64 MiB; 4 KiB at least). Smaller
    /// segments are reclaimed sooner once their messages are settled; the crash tests use
    /// small ones so that kills land across segment rollovers and prepared segments.
    pub log_segment_bytes: u64,
}

/// The fsync policy for persistent messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Fsync as soon as the writer has something to sync (group commit).
    #[default]
    Always,
    /// Fsync at most `sync_batch_ms` after the first unsynced write.
    Batch,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            data_dir: PathBuf::from("data"),
            vhosts: vec!["/".to_string()],
            users: Vec::new(),
            loopback_users: vec!["guest".to_string()],
            memory_high_watermark: 0,
            max_message_size: 128 * 1024 * 1024,
            sync: SyncMode::Always,
            sync_batch_ms: 10,
            queue_resident_bytes: 64 * 1024 * 1024,
            log_segment_bytes: 64 * 1024 * 1024,
            disk_free_limit: 50_000_000,
        }
    }
}

/// One user account.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// Clear-text password; hashed at load time and never kept.
    pub password: Option<String>,
    /// RabbitMQ-format `rabbit_password_hashing_sha256` hash: base64(salt[4] ‖ sha256(salt ‖ password)).
    pub password_hash: Option<String>,
    /// Tags such as `administrator`, `management` (used by the management API).
    pub tags: Vec<String>,
    /// Permissions per virtual host name.
    pub permissions: BTreeMap<String, PermissionConfig>,
}

/// RabbitMQ's three permission regexes for one user on one vhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionConfig {
    /// Resources the user may declare and delete.
    pub configure: String,
    /// Resources the user may publish to / bind from.
    pub write: String,
    /// Resources the user may consume from / bind to.
    pub read: String,
}

impl Default for PermissionConfig {
    fn default() -> Self {
        PermissionConfig { configure: ".*".into(), write: ".*".into(), read: ".*".into() }
    }
}
