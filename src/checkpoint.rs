//! Checkpoints: where a pipeline resumes after a stop or a crash.
//!
//! A [`Checkpoint`] holds the source [`Position`] (for Kinesis, every shard's sequence number or
//! `SHARD_END`) and the window state of the SQL at exactly that position. The pipeline writes one
//! only when every sink has acknowledged all output derived from the input the position covers, so a
//! restart from it loses nothing: records after it are read again, and output from them may be
//! written a second time (at-least-once delivery).
//!
//! [`CheckpointStore`] is where checkpoints live. [`FileCheckpointStore`] keeps one in a local file,
//! replaced atomically (write to a temporary file, fsync, rename, fsync the directory), so a crash
//! at any moment leaves either the old checkpoint or the new one, never a torn mix.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::record::Position;
use crate::{Error, Result};

/// First bytes of a checkpoint file.
const FILE_MAGIC: &[u8; 8] = b"RIVULET\x01";

/// Format version of the checkpoint header.
const FORMAT_VERSION: u32 = 1;

/// A consistent cut of a pipeline: the source position and the SQL window state after the input
/// up to that position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Where the source resumes.
    pub position: Position,
    /// Window state of each stateful SQL statement, in statement order (empty for stateless SQL).
    pub state: Vec<Vec<u8>>,
    /// Source partitions (shards) in the order the window state numbers them: their event-time
    /// watermarks are kept per partition.
    pub partitions: Vec<String>,
    /// A fingerprint of the SQL the state belongs to: state is only restored into the same SQL.
    pub sql_fingerprint: String,
    /// When the checkpoint was taken, in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

impl Checkpoint {
    /// Total bytes of window state.
    pub fn state_bytes(&self) -> usize {
        self.state.iter().map(Vec::len).sum()
    }
}

/// Where checkpoints are kept.
///
/// A local file ([`FileCheckpointStore`]) serves a single process; a shared store (a DynamoDB lease
/// table) lets several processes split a stream's shards.
#[async_trait]
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// The latest checkpoint, or `None` when none was ever saved.
    async fn load(&self) -> Result<Option<Checkpoint>>;

    /// Replaces the stored checkpoint. When this returns, the checkpoint survives a crash.
    async fn save(&self, checkpoint: &Checkpoint) -> Result<()>;
}

/// A checkpoint in one local file, replaced atomically.
///
/// The file holds a JSON header (format version, position, state sizes) followed by the raw window
/// state (Arrow IPC streams). Its parent directory is created when missing.
#[derive(Debug, Clone)]
pub struct FileCheckpointStore {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    created_ms: i64,
    sql_fingerprint: String,
    position: Position,
    #[serde(default)]
    partitions: Vec<String>,
    state_lengths: Vec<u64>,
}

impl FileCheckpointStore {
    /// A store writing `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
        let header = Header {
            version: FORMAT_VERSION,
            created_ms: checkpoint.created_ms,
            sql_fingerprint: checkpoint.sql_fingerprint.clone(),
            position: checkpoint.position.clone(),
            partitions: checkpoint.partitions.clone(),
            state_lengths: checkpoint.state.iter().map(|s| s.len() as u64).collect(),
        };
        let header = serde_json::to_vec(&header)
            .map_err(|e| Error::Pipeline(format!("encoding a checkpoint: {e}")))?;
        let mut out =
            Vec::with_capacity(FILE_MAGIC.len() + 4 + header.len() + checkpoint.state_bytes());
        out.extend_from_slice(FILE_MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for part in &checkpoint.state {
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Checkpoint> {
        let bad = |why: &str| {
            Error::Pipeline(format!(
                "checkpoint file {} is not a rivulet checkpoint: {why}",
                self.path.display()
            ))
        };
        let rest = bytes
            .strip_prefix(FILE_MAGIC.as_slice())
            .ok_or_else(|| bad("wrong magic bytes"))?;
        if rest.len() < 4 {
            return Err(bad("truncated header"));
        }
        let (len, rest) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if rest.len() < len {
            return Err(bad("truncated header"));
        }
        let (header, mut state) = rest.split_at(len);
        let header: Header =
            serde_json::from_slice(header).map_err(|e| bad(&format!("header: {e}")))?;
        if header.version != FORMAT_VERSION {
            return Err(bad(&format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                header.version
            )));
        }
        let mut parts = Vec::with_capacity(header.state_lengths.len());
        for len in header.state_lengths {
            let len = usize::try_from(len).map_err(|_| bad("state too large"))?;
            if state.len() < len {
                return Err(bad("truncated window state"));
            }
            let (part, rest) = state.split_at(len);
            parts.push(part.to_vec());
            state = rest;
        }
        if !state.is_empty() {
            return Err(bad("trailing bytes after the window state"));
        }
        Ok(Checkpoint {
            position: header.position,
            state: parts,
            partitions: header.partitions,
            sql_fingerprint: header.sql_fingerprint,
            created_ms: header.created_ms,
        })
    }

    fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "checkpoint".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is.
        std::fs::File::open(&dir)?.sync_all()
    }
}

#[async_trait]
impl CheckpointStore for FileCheckpointStore {
    async fn load(&self) -> Result<Option<Checkpoint>> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => self.decode(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(
                format!("reading checkpoint {}", self.path.display()),
                e,
            )),
        }
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<()> {
        let bytes = Self::encode(checkpoint)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || Self::write_atomically(&path, &bytes))
            .await
            .map_err(|e| Error::Pipeline(format!("checkpoint writer panicked: {e}")))?
            .map_err(|e| Error::io(format!("writing checkpoint {}", self.path.display()), e))
    }
}

/// A fingerprint of SQL text, stored with window state so that state is never restored into a
/// different query.
pub(crate) fn sql_fingerprint(sql: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(sql.trim().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut position = Position::single(
            "shardId-000000000000",
            "49590338271490256608559692538361571095921575989136588898",
        );
        position.set("shardId-000000000001", "SHARD_END");
        Checkpoint {
            position,
            state: vec![vec![1, 2, 3], Vec::new(), vec![9; 1000]],
            partitions: vec!["shardId-000000000001".into(), "shardId-000000000000".into()],
            sql_fingerprint: sql_fingerprint("SELECT 1"),
            created_ms: 1_700_000_000_000,
        }
    }

    #[tokio::test]
    async fn saved_checkpoint_loads_back_identical() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path().join("nested/dir/cp"));
        assert_eq!(store.load().await.unwrap(), None);
        let cp = sample();
        store.save(&cp).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(cp.clone()));
        // Replaced, not appended; no temporary file left behind.
        let mut second = cp;
        second.state.clear();
        store.save(&second).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(second));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("nested/dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["cp"]);
    }

    #[tokio::test]
    async fn damaged_file_is_an_error_not_an_empty_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        let store = FileCheckpointStore::new(&path);
        store.save(&sample()).await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = store.load().await.unwrap_err().to_string();
        assert!(err.contains("truncated window state"), "{err}");
        std::fs::write(&path, b"{\"not\": \"ours\"}").unwrap();
        let err = store.load().await.unwrap_err().to_string();
        assert!(err.contains("wrong magic"), "{err}");
    }

    #[test]
    fn fingerprint_ignores_surrounding_whitespace_only() {
        assert_eq!(sql_fingerprint("SELECT 1\n"), sql_fingerprint("SELECT 1"));
        assert_ne!(sql_fingerprint("SELECT 1"), sql_fingerprint("SELECT 2"));
    }
}
