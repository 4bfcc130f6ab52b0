//! Integration tests of rivulet through its public API and its command line.

#[cfg(feature = "aws")]
mod backlog;
mod bench;
mod cli;
mod conformance;
#[cfg(feature = "aws")]
mod firehose;
mod kda_app;
#[cfg(feature = "aws")]
mod kill_loop;
#[cfg(feature = "aws")]
mod kinesis;
mod partitions;
mod pipeline;
mod push;
#[cfg(feature = "aws")]
mod restarts;
#[cfg(feature = "aws")]
mod s3;
#[cfg(feature = "setup")]
mod setup;
mod sql_cases;
mod support;
#[cfg(feature = "wasm")]
mod wasm;
#[cfg(feature = "wasm")]
mod wasm_aggregates;
#[cfg(feature = "wasm")]
mod wasm_transforms;
mod windows;
