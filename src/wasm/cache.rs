//! The on-disk cache of compiled modules: native code is loaded only from a directory and entries
//! that this process's user owns and no one else can write.

use std::hash::{Hash as _, Hasher as _};

use wasmtime::{Engine, Module};

use super::engine::wasm_err;
use crate::Result;

/// Compiles `bytes`, or loads the compiled module from `cache_dir`, keyed by the module's digest
/// and the engine's compatibility hash; a cache entry that does not load is compiled again.
pub(super) fn compile_cached(
    engine: &Engine,
    name: &str,
    bytes: &[u8],
    cache_dir: Option<&std::path::Path>,
) -> Result<Module> {
    let compile = || {
        Module::new(engine, bytes).map_err(|e| wasm_err(name, format!("cannot be compiled: {e:#}")))
    };
    let Some(dir) = cache_dir else {
        return compile();
    };
    let key = {
        use md5::Digest as _;
        let digest = md5::Md5::digest(bytes);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{:016x}.cwasm", h.finish())
    };
    // The cache holds native code this process runs: it is used only in a directory of this
    // user that no other user can write, and only for entries of the same kind.
    if let Err(why) = trusted_cache_dir(dir) {
        tracing::warn!(dir = %dir.display(), "compiled module cache not used: {why}");
        return compile();
    }
    let path = dir.join(key);
    // Read into memory rather than mapped: a cache file truncated by someone else while it is in
    // use must not crash the process.
    match read_trusted_entry(&path) {
        Ok(Some(compiled)) => {
            // SAFETY: the file was written by `Module::serialize` of an engine with the same
            // compatibility hash, into a directory and a file only this user can write (checked
            // above); wasmtime checks the header too.
            match unsafe { Module::deserialize(engine, &compiled) } {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "compiled module cache entry not used: {e}")
                }
            }
        }
        Ok(None) => {}
        Err(why) => {
            tracing::warn!(path = %path.display(), "compiled module cache entry not used: {why}");
        }
    }
    let module = compile()?;
    if let Ok(serialized) = module.serialize() {
        let tmp = path.with_extension("tmp");
        let written = write_private(&tmp, &serialized).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot cache the compiled module: {e}");
        }
    }
    Ok(module)
}

/// Checks that `dir` may hold native code this process loads, creating it (mode 0700) when it is
/// missing: a directory owned by this process's user that no other user can write.
#[cfg(unix)]
fn trusted_cache_dir(dir: &std::path::Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    owned_and_private(&meta)
}

/// Outside Unix, the directory is only created: ownership and modes are not checked.
#[cfg(not(unix))]
fn trusted_cache_dir(dir: &std::path::Path) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))
}

/// Whether `meta` is of this process's user and not writable by its group or others.
#[cfg(unix)]
fn owned_and_private(meta: &std::fs::Metadata) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "it belongs to user {} and this process runs as user {me}",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "users other than its owner can write it (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The bytes of cache entry `path`, or `None` when there is none; an entry that is not a regular
/// file of this user, writable by no one else, is an error. The checks are made on the opened
/// file, so the entry cannot be swapped between check and read.
fn read_trusted_entry(path: &std::path::Path) -> std::result::Result<Option<Vec<u8>>, String> {
    use std::io::Read as _;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    #[cfg(unix)]
    owned_and_private(&meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

/// Writes `bytes` to a new file at `path` that only its owner can read and write.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    // A file left by an earlier writer keeps its mode when reopened: start from a new one.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
