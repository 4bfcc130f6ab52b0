//! Amazon Kinesis Data Streams: the [`KinesisSource`] and the pieces it is built from, and the
//! [`KinesisSink`] (PutRecords, with the delivery machinery it shares with the Firehose sink).
//!
//! The source lists the stream's shards (ListShards, refreshed periodically and whenever a shard
//! ends), runs one polling reader per shard (GetShardIterator / GetRecords) and merges what they
//! read into micro-batches. A child shard is read only once all its parents are read to their end,
//! so the records of one partition key keep their order across splits and merges. KPL aggregated
//! records are unpacked into their sub-records ([`kpl`], [`RecordUnpacker`]).
//!
//! The source's [`Position`](crate::Position) holds one offset per shard: the sequence number of
//! the last record handed on (with a sub-sequence number inside an aggregated record), `SHARD_END`
//! for a shard read to its end, or the start position of a shard that has given nothing yet. With a
//! [`CheckpointStore`](crate::CheckpointStore) on the pipeline, a restart resumes every shard right
//! after its checkpointed offset.

mod api;
#[cfg(test)]
mod fake;
pub mod kpl;
mod reader;
mod shards;
mod sink;
mod source;

pub use reader::{PollSettings, MAX_EVENT_BYTES, MAX_EVENT_RECORDS, MAX_RECORDS_PER_CALL};
pub use shards::{RecordUnpacker, UnpackStats};
pub use sink::{KinesisSink, KinesisSinkBuilder};
pub use source::{KinesisSource, KinesisSourceBuilder, StartPosition};

/// The Kinesis sink's service limits.
pub mod sink_limits {
    pub use super::sink::{
        MAX_BYTES_PER_CALL, MAX_PARTITION_KEY_CHARS, MAX_RECORDS_PER_CALL, MAX_RECORD_BYTES,
    };
}
