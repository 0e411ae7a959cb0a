//! Durable definitions of one vhost — its durable exchanges, durable queues and
//! the bindings between durable objects — kept as one JSON file that is
//! rewritten atomically (temp file, fsync, rename, fsync of the directory)
//! whenever one of them changes. Declarations are rare and small, so a full
//! rewrite is simpler and safer than a log.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::message::FieldTable;

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Name.
    pub name: String,
    /// Type name.
    pub kind: String,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// A durable queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    /// Name.
    pub name: String,
    /// The id its messages carry in the message log.
    pub store_id: u64,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: FieldTable,
    /// Arguments changed after declare (see `Queue::set_policy`); they override `arguments`.
    #[serde(default, skip_serializing_if = "FieldTable::is_empty")]
    pub policy: FieldTable,
}

/// A binding between durable objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingDef {
    /// Source exchange.
    pub source: String,
    /// Destination name.
    pub destination: String,
    /// True if the destination is an exchange.
    pub to_exchange: bool,
    /// Binding key.
    pub key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// Everything durable in one vhost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    /// Durable exchanges (the predeclared ones are not stored).
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues.
    pub queues: Vec<QueueDef>,
    /// Bindings whose source and destination are both durable.
    pub bindings: Vec<BindingDef>,
}

/// The definitions file of one vhost.
#[derive(Debug)]
pub struct DefinitionsFile {
    path: PathBuf,
}

impl DefinitionsFile {
    /// The file for `vhost` under `data_dir` (the name is hex-encoded, so any vhost name is a safe file name).
    pub fn for_vhost(data_dir: &Path, vhost: &str) -> DefinitionsFile {
        let hex: String = vhost.bytes().map(|b| format!("{b:02x}")).collect();
        DefinitionsFile { path: data_dir.join("vhosts").join(format!("{hex}.json")) }
    }

    /// Load the stored definitions; an absent file is an empty set.
    pub fn load(&self) -> Result<Definitions, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Definitions::default()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Replace the stored definitions atomically and durably.
    pub fn save(&self, defs: &Definitions) -> std::io::Result<()> {
        crate::store::atomic::write_json(&self.path, defs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldValue;

    #[test]
    fn save_then_load_round_trips_typed_arguments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = DefinitionsFile::for_vhost(dir.path(), "/");
        assert_eq!(file.load().expect("empty"), Definitions::default());
        let mut args = FieldTable::new();
        args.insert("x-message-ttl".into(), FieldValue::I32(1000));
        args.insert("x-dead-letter-exchange".into(), FieldValue::text("dlx"));
        let defs = Definitions {
            exchanges: vec![ExchangeDef {
                name: "x".into(),
                kind: "topic".into(),
                auto_delete: false,
                internal: false,
                arguments: FieldTable::new(),
            }],
            queues: vec![QueueDef {
                name: "q".into(),
                store_id: 42,
                auto_delete: false,
                arguments: args,
                policy: FieldTable::new(),
            }],
            bindings: vec![BindingDef {
                source: "x".into(),
                destination: "q".into(),
                to_exchange: false,
                key: "a.#".into(),
                arguments: FieldTable::new(),
            }],
        };
        file.save(&defs).expect("save");
        assert_eq!(file.load().expect("load"), defs);
    }
}
