//! Shared test helpers.

pub(crate) mod fault_proxy;
pub(crate) mod moto;
pub(crate) mod s3;

use std::path::PathBuf;

/// Path of a fixture in `tests/data`.
pub(crate) fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}
