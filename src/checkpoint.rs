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
    /// The input's columns (name and type) as the first run inferred them; a restart decodes with
    /// them instead of inferring again (from a stream that may hold nothing new). Empty when the
    /// columns were given.
    pub input_columns: Vec<(String, arrow::datatypes::DataType)>,
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
    /// (name, Arrow type as text)
    #[serde(default)]
    input_columns: Vec<(String, String)>,
    state_lengths: Vec<u64>,
    /// MD5 of each state part (hex): damaged bytes are found before they are decoded. Absent in
    /// checkpoints of earlier versions.
    #[serde(default)]
    state_digests: Vec<String>,
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

    pub(crate) fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
        let header = Header {
            version: FORMAT_VERSION,
            created_ms: checkpoint.created_ms,
            sql_fingerprint: checkpoint.sql_fingerprint.clone(),
            position: checkpoint.position.clone(),
            partitions: checkpoint.partitions.clone(),
            input_columns: checkpoint
                .input_columns
                .iter()
                .map(|(n, t)| (n.clone(), t.to_string()))
                .collect(),
            state_lengths: checkpoint.state.iter().map(|s| s.len() as u64).collect(),
            state_digests: checkpoint.state.iter().map(|s| digest(s)).collect(),
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

    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Checkpoint> {
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
        if !header.state_digests.is_empty()
            && header.state_digests.len() != header.state_lengths.len()
        {
            return Err(bad("the window state's digests do not match its parts"));
        }
        let mut parts = Vec::with_capacity(header.state_lengths.len());
        for (i, len) in header.state_lengths.into_iter().enumerate() {
            let len = usize::try_from(len).map_err(|_| bad("state too large"))?;
            if state.len() < len {
                return Err(bad("truncated window state"));
            }
            let (part, rest) = state.split_at(len);
            if header
                .state_digests
                .get(i)
                .is_some_and(|d| *d != digest(part))
            {
                return Err(bad(&format!(
                    "the window state of statement {} is damaged (its digest does not match)",
                    i + 1
                )));
            }
            parts.push(part.to_vec());
            state = rest;
        }
        if !state.is_empty() {
            return Err(bad("trailing bytes after the window state"));
        }
        let input_columns = header
            .input_columns
            .into_iter()
            .map(|(name, t)| {
                let t = t
                    .parse()
                    .map_err(|_| bad(&format!("input column `{name}` has no type `{t}`")))?;
                Ok((name, t))
            })
            .collect::<Result<_>>()?;
        Ok(Checkpoint {
            position: header.position,
            state: parts,
            partitions: header.partitions,
            sql_fingerprint: header.sql_fingerprint,
            created_ms: header.created_ms,
            input_columns,
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

/// MD5 of `bytes`, as hex.
fn digest(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fingerprint of SQL text, stored with window state so that state is never restored into a
/// different query.
pub(crate) fn sql_fingerprint(sql: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(sql.trim().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A checkpoint file with some of everything, for the fuzz targets' seeds.
#[cfg(test)]
pub(crate) fn fuzz_seed_checkpoint() -> Vec<u8> {
    FileCheckpointStore::encode(&Checkpoint {
        position: Position::single(
            "shardId-000000000000",
            "49590338271490256608559692538361571095921575989136588898:3",
        ),
        state: vec![vec![1, 2, 3], Vec::new()],
        partitions: vec!["shardId-000000000000".into()],
        sql_fingerprint: sql_fingerprint("SELECT 1"),
        created_ms: 1_767_225_600_000,
        input_columns: vec![("x".into(), arrow::datatypes::DataType::Int64)],
    })
    .expect("a checkpoint encodes")
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
            input_columns: vec![
                ("id".into(), arrow::datatypes::DataType::Int64),
                (
                    "ts".into(),
                    arrow::datatypes::DataType::Timestamp(
                        arrow::datatypes::TimeUnit::Millisecond,
                        Some("+00:00".into()),
                    ),
                ),
            ],
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
        // A byte of the window state changed, the length kept.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let err = store.load().await.unwrap_err().to_string();
        assert!(err.contains("statement 3 is damaged"), "{err}");
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
