//! `rivulet bench --kinesis`: the load is produced into a Kinesis stream while the pipeline reads
//! it back with the Kinesis source, so the figures include the source (shards, polling, the
//! service's own latency).
//!
//! A producer task puts the scenario's records with `PutRecords` (500 records or 4 MiB a call,
//! failed records retried with back-off). The pipeline reads the stream from the time the run
//! started, and the run ends once it has read as many records as were put. A record's latency is
//! from its arrival in the stream (`ApproximateArrivalTimestamp`, which the service stamps when it
//! accepts the put) to the commit that covers it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use super::load::{Latencies, LoadSource};
use super::LoadOptions;
use crate::aws::{Backoff, ClientOptions};
use crate::kinesis::{KinesisSource, StartPosition};
use crate::record::now_ms;
use crate::source::{Source, SourceBatch};
use crate::{Error, Position, Result};

/// Records per `PutRecords` call (the service's limit).
const PUT_RECORDS: usize = 500;
/// Payload bytes per `PutRecords` call, under the service's 5 MiB with room for the keys.
const PUT_BYTES: usize = 4 << 20;
/// Attempts of one call's failed records before the run fails.
const PUT_ATTEMPTS: u32 = 20;
/// How long the reader may go without a new record once the producer is done before the run
/// fails with the count of records missing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The Kinesis stream a benchmark produces into and reads from.
#[derive(Debug, Clone)]
pub struct KinesisLoad {
    stream: String,
    aws: ClientOptions<aws_sdk_kinesis::Client>,
}

// `client_options` of the setters is for pipeline files, which do not name a bench stream.
#[allow(dead_code)]
impl KinesisLoad {
    /// Produce into and read from `stream` (a name or an ARN); it must exist. Records already in
    /// it are not read.
    pub fn new(stream: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            aws: ClientOptions::default(),
        }
    }

    crate::aws::client_setters!(aws_sdk_kinesis::Client);

    /// The stream's name or ARN.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

/// The Kinesis source, ending once it has read what the producer put, with the latency of each
/// record recorded at the commit that covers it.
pub(super) struct KinesisBenchSource {
    inner: KinesisSource,
    /// What the producer needs, until the first batch is asked for: it starts then, so the run's
    /// time covers producing as well as reading.
    pending: Option<(aws_sdk_kinesis::Client, String, LoadSource)>,
    producer: Option<tokio::task::JoinHandle<Result<()>>>,
    produced: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    read: u64,
    last_progress: Instant,
    /// Each batch's position and the running count of records read through it, oldest first.
    batches: VecDeque<(Position, u64)>,
    latencies: Arc<Mutex<Latencies>>,
}

impl std::fmt::Debug for KinesisBenchSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisBenchSource")
            .field("read", &self.read)
            .field("produced", &self.produced.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl KinesisBenchSource {
    /// Builds the source and the producer, which starts with the first batch asked for; the
    /// source reads what is put from a second before now on.
    pub(super) async fn start(
        target: KinesisLoad,
        load: LoadOptions,
        latencies: Arc<Mutex<Latencies>>,
    ) -> Result<Self> {
        if target.stream.trim().is_empty() {
            return Err(Error::config(
                "bench.kinesis",
                "a stream name or ARN is required",
            ));
        }
        let client = target
            .aws
            .clone()
            .client("bench.kinesis", |shared| {
                crate::aws::sdk_client!(aws_sdk_kinesis, *shared)
            })
            .await?;
        // A second behind now: the service's arrival stamps and this clock may differ a little,
        // and reading a record put just before is harmless (the run stops on the count).
        let from = now_ms() - 1000;
        let inner = KinesisSource::builder(target.stream.clone())
            .client(client.clone())
            .start_position(StartPosition::AtTimestamp(from))
            .build()
            .await?;
        let generator = LoadSource::new(load, Arc::new(Mutex::new(Latencies::new())))?;
        Ok(Self {
            inner,
            pending: Some((client, target.stream, generator)),
            producer: None,
            produced: Arc::new(AtomicU64::new(0)),
            done: Arc::new(AtomicBool::new(false)),
            read: 0,
            last_progress: Instant::now(),
            batches: VecDeque::new(),
            latencies,
        })
    }

    /// The producer's outcome once it has ended: an error ends the run.
    async fn check_producer(&mut self) -> Result<()> {
        if self.producer.as_ref().is_some_and(|p| p.is_finished()) {
            let handle = self.producer.take().expect("checked above");
            match handle.await {
                Ok(r) => r?,
                Err(e) => {
                    return Err(Error::source(
                        "bench load",
                        format!("the producer task failed: {e}"),
                    ))
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for KinesisBenchSource {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        if let Some((client, stream, generator)) = self.pending.take() {
            self.producer = Some(tokio::spawn(produce(
                client,
                stream,
                generator,
                Arc::clone(&self.produced),
                Arc::clone(&self.done),
            )));
        }
        self.check_producer().await?;
        let produced = self.produced.load(Ordering::Acquire);
        if self.done.load(Ordering::Acquire) && self.read >= produced {
            return Ok(None);
        }
        if self.done.load(Ordering::Acquire) && self.last_progress.elapsed() > DRAIN_TIMEOUT {
            return Err(Error::source(
                "bench load",
                format!(
                    "{} of the {produced} records put were not read back within {} s",
                    produced - self.read,
                    DRAIN_TIMEOUT.as_secs()
                ),
            ));
        }
        let Some(batch) = self.inner.next_batch().await? else {
            return Ok(None);
        };
        if !batch.records.is_empty() {
            self.last_progress = Instant::now();
            let now = Instant::now();
            let wall = now_ms();
            let mut latencies = self.latencies.lock().expect("latencies lock");
            for r in &batch.records {
                self.read += 1;
                // The record's arrival in the stream, as an instant of this process's clock.
                let ago =
                    Duration::from_millis(u64::try_from(wall - r.arrival_time_ms()).unwrap_or(0));
                latencies.produced(self.read, now.checked_sub(ago).unwrap_or(now), 1);
            }
        }
        if !batch.position.is_empty() {
            self.batches.push_back((batch.position.clone(), self.read));
        }
        Ok(Some(batch))
    }

    async fn commit(&mut self, position: &Position) -> Result<()> {
        if let Some(i) = self.batches.iter().position(|(p, _)| p == position) {
            let through = self.batches[i].1;
            self.batches.drain(..=i);
            let mut latencies = self.latencies.lock().expect("latencies lock");
            latencies.committed_through(through, Instant::now());
        }
        self.inner.commit(position).await
    }
}

/// Puts the generator's records into `stream` until it ends; `produced` counts the records the
/// service accepted, and `done` is set when the producer stops, whether it ended or failed.
async fn produce(
    client: aws_sdk_kinesis::Client,
    stream: String,
    mut generator: LoadSource,
    produced: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> Result<()> {
    let result = async {
        let mut key = 0u64;
        let mut call: Vec<PutRecordsRequestEntry> = Vec::with_capacity(PUT_RECORDS);
        let mut bytes = 0;
        while let Some(batch) = generator.next_batch().await? {
            for r in batch.records {
                let size = r.payload().len();
                if !call.is_empty() && (call.len() == PUT_RECORDS || bytes + size > PUT_BYTES) {
                    let n = put_all(&client, &stream, std::mem::take(&mut call)).await?;
                    produced.fetch_add(n, Ordering::Release);
                    bytes = 0;
                }
                key += 1;
                call.push(
                    PutRecordsRequestEntry::builder()
                        .data(Blob::new(r.payload().to_vec()))
                        .partition_key(key.to_string())
                        .build()
                        .map_err(|e| Error::Pipeline(format!("a put entry: {e}")))?,
                );
                bytes += size;
            }
            // What a batch of the generator holds is put before the next one is made, so a rate
            // is kept at the stream, not only at the generator.
            if !call.is_empty() {
                let n = put_all(&client, &stream, std::mem::take(&mut call)).await?;
                produced.fetch_add(n, Ordering::Release);
                bytes = 0;
            }
        }
        Ok(())
    }
    .await;
    done.store(true, Ordering::Release);
    result
}

/// Puts `entries`, retrying the ones the service fails (throttled, internal errors) and failed
/// calls with back-off; returns how many were put.
async fn put_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    mut entries: Vec<PutRecordsRequestEntry>,
) -> Result<u64> {
    let total = entries.len() as u64;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let arn = stream.starts_with("arn:");
    for attempt in 1..=PUT_ATTEMPTS {
        let call = client.put_records().set_records(Some(entries.clone()));
        let call = if arn {
            call.stream_arn(stream)
        } else {
            call.stream_name(stream)
        };
        match call.send().await {
            Ok(out) if out.failed_record_count().unwrap_or(0) == 0 => return Ok(total),
            Ok(out) => {
                entries = entries
                    .into_iter()
                    .zip(out.records())
                    .filter(|(_, r)| r.error_code().is_some())
                    .map(|(e, _)| e)
                    .collect();
            }
            Err(e) if attempt == PUT_ATTEMPTS => {
                return Err(Error::source(
                    "bench load",
                    format!(
                        "PutRecords to {stream} failed {PUT_ATTEMPTS} times: {}",
                        aws_sdk_kinesis::error::DisplayErrorContext(&e)
                    ),
                ))
            }
            Err(_) => {}
        }
        tokio::time::sleep(backoff.next()).await;
    }
    Err(Error::source(
        "bench load",
        format!(
            "{} records were still refused by {stream} after {PUT_ATTEMPTS} attempts",
            entries.len()
        ),
    ))
}
