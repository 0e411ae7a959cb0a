//! The stream metadata of one vhost — every stream's shards, lineage, settings, tags,
//! consumers and named reader offsets — as one JSON file rewritten atomically (temp file,
//! fsync, rename, fsync of the directory) on every change. Changes are rare next to appends,
//! which never touch this file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::state::StreamMeta;

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileForm {
    streams: Vec<StreamMeta>,
}

/// The metadata file.
#[derive(Debug)]
pub struct MetaFile {
    path: PathBuf,
}

impl MetaFile {
    /// The file at `path`.
    pub fn new(path: PathBuf) -> MetaFile {
        MetaFile { path }
    }

    /// Load; an absent file means no streams.
    pub fn load(&self) -> Result<Vec<StreamMeta>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<FileForm>(&bytes)
                .map(|f| f.streams)
                .map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Replace atomically and durably.
    pub fn save(&self, streams: &[StreamMeta]) -> std::io::Result<()> {
        crate::store::atomic::write_json(&self.path, &FileForm { streams: streams.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::state::{StreamSettings, StreamState};

    #[test]
    fn metadata_round_trips_with_128_bit_hash_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = MetaFile::new(dir.path().join("streams.json"));
        assert!(file.load().expect("empty").is_empty());
        let mut s = StreamState::new("s", 7, 3, StreamSettings::default(), 1).expect("new");
        s.split(0, 1000, 2).expect("split");
        let metas = vec![s.meta()];
        file.save(&metas).expect("save");
        assert_eq!(file.load().expect("load"), metas);
        std::fs::write(dir.path().join("streams.json"), b"{not json").expect("write");
        assert!(file.load().is_err());
    }
}
