//! What SNS keeps beside the core's exchanges and bindings: topic attributes and tags, and
//! HTTP subscriptions waiting for confirmation. One JSON file under the data directory
//! (`<data_dir>/sns/state.json`), rewritten atomically on every change, so topics keep their
//! attributes across restarts. Topics and confirmed subscriptions themselves are the core's
//! durable exchanges and bindings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A topic's SNS-side settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// Attributes as set (`DisplayName`, `DeliveryPolicy`, `SignatureVersion`, ...).
    pub attributes: BTreeMap<String, String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// An HTTP subscription awaiting its `ConfirmSubscription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The topic's name.
    pub topic: String,
    /// The subscription id (last ARN segment) it will get.
    pub id: String,
    /// `http`.
    pub protocol: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// Subscription attributes given to `Subscribe`.
    pub attributes: BTreeMap<String, String>,
}

/// Everything in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// By topic name.
    pub topics: BTreeMap<String, TopicState>,
    /// By confirmation token.
    pub pending: BTreeMap<String, Pending>,
}

/// The state file.
#[derive(Debug)]
pub struct StateFile {
    path: Option<PathBuf>,
}

impl StateFile {
    /// The file under `data_dir` (`None`: keep nothing on disk).
    pub fn new(data_dir: Option<&Path>) -> StateFile {
        StateFile { path: data_dir.map(|d| d.join("sns").join("state.json")) }
    }

    /// The stored state; an absent or unreadable file is an empty state (logged).
    pub fn load(&self) -> State {
        let Some(path) = &self.path else { return State::default() };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(path = %path.display(), error = %e, "SNS state file unreadable; starting empty");
                State::default()
            }),
            Err(_) => State::default(),
        }
    }

    /// Replaces the file atomically (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        switchyard::store::atomic::write_json(path, state)
    }
}
