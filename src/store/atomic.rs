//! Replacing a small state file so that a crash leaves either the old or the new version,
//! never a torn one: write a temp file, fsync it, rename it over the old one, fsync the
//! directory. Definitions, stream metadata and the SNS state all use it.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

/// Writes `value` as pretty JSON to `path`, atomically and durably (see the module docs).
/// The directory is created if missing; the temp file is `path` with a `.json.tmp` extension.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("state.json");
        write_json(&path, &vec![1, 2]).expect("first");
        write_json(&path, &vec![3]).expect("second");
        let back: Vec<i32> = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(back, vec![3]);
        assert!(!path.with_extension("json.tmp").exists());
    }
}
