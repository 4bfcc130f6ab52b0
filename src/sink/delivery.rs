//! What the AWS sinks share: per-record delivery with partial-failure retries, a sink-wide pause
//! when throttled, bounded concurrency, and the hand-over of undeliverable records to the error
//! output.
//!
//! A sink turns its rows into service records, groups them into requests with [`plan`], and hands
//! each request to a [`Dispatcher`], which sends it with the service's [`PutApi`] until every
//! record is accepted or out of attempts. Records out of attempts go to the error output with their
//! last error code; a request's acknowledgement completes once each of its records is either
//! accepted or stored there.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{ErrorOutput, ErrorRecord, ErrorStage};
use crate::ack::Ack;
use crate::record::Record;
use crate::source::now_ms;
use crate::{Error, Result};

/// How a sink retries and how much it sends at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Calls made for one record before it goes to the error output (default 8).
    pub max_attempts: u32,
    /// Time after the first call of a request after which failed records go to the error output
    /// (default 60 s).
    pub max_retry_time: Duration,
    /// Requests in flight at once (default 4); more output waits.
    pub max_concurrent_requests: usize,
    /// First back-off after a failure (default 100 ms); doubles up to `max_backoff`, jittered.
    pub initial_backoff: Duration,
    /// Longest back-off (default 5 s).
    pub max_backoff: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            max_retry_time: Duration::from_secs(60),
            max_concurrent_requests: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl DeliverySettings {
    pub(crate) fn validate(&self, key: &str) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::config(
                format!("{key}.max_attempts"),
                "must be at least 1",
            ));
        }
        if self.max_concurrent_requests == 0 {
            return Err(Error::config(
                format!("{key}.max_concurrent_requests"),
                "must be at least 1",
            ));
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return Err(Error::config(
                format!("{key}.max_backoff_ms"),
                "back-offs must be positive, the longest at least the first",
            ));
        }
        Ok(())
    }

    /// The wait after the `attempt`-th call (from 1): up to `initial_backoff`, doubling.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Why a whole call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The service asks to slow down: the whole sink backs off.
    Throttled { code: String, message: String },
    /// A network or server failure: retry.
    Transient { code: String, message: String },
    /// Retrying cannot help (no such delivery stream, access denied).
    Fatal(String),
}

/// Sorts an AWS SDK error by what the delivery does about it: codes in `throttling` pause the
/// sink, codes in `fatal` (and requests that cannot even be built) stop it, and anything else (a
/// server error, a network failure, a timeout) is retried.
pub(crate) fn classify<E, R>(
    err: aws_sdk_kinesis::error::SdkError<E, R>,
    throttling: &[&str],
    fatal: &[&str],
) -> CallError
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    use aws_sdk_kinesis::error::SdkError;
    let message = format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&err));
    match &err {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("Unknown").to_owned();
            if throttling.contains(&code.as_str()) {
                CallError::Throttled { code, message }
            } else if fatal.contains(&code.as_str()) {
                CallError::Fatal(message)
            } else {
                CallError::Transient { code, message }
            }
        }
        // A request that cannot be built is a bug or a configuration error; anything that
        // happens while sending (including unclassified connector errors) is retried, within the
        // attempt and time bounds.
        SdkError::ConstructionFailure(_) => CallError::Fatal(message),
        _ => CallError::Transient {
            code: "RequestFailed".into(),
            message,
        },
    }
}

/// The outcome of each record of a call: `None` accepted, `Some((code, message))` failed.
pub(crate) type CallResult = std::result::Result<Vec<Option<(String, String)>>, CallError>;

/// A record a sink sends: how large it counts against the service's limits, and what the error
/// output keeps of it.
pub(crate) trait Outbound: Clone + Send + Sync + 'static {
    /// Bytes it counts for, against the per-record and per-call limits.
    fn size(&self) -> usize;
    /// The record as the error output keeps it.
    fn as_error_record(&self, now_ms: i64) -> Record;
}

/// One service's batch call: the outcome of each record, in order.
#[async_trait]
pub(crate) trait PutApi<R: Outbound>: Send + Sync + fmt::Debug + 'static {
    async fn put(&self, records: &[R]) -> CallResult;

    /// Per-record error codes that mean "slow down" (they pause the whole sink).
    fn throttling_codes(&self) -> &'static [&'static str];
}

/// A service's batch limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_records: usize,
    pub(crate) max_call_bytes: usize,
    pub(crate) max_record_bytes: usize,
}

/// Groups records into requests within `limits`, greedily and in order; returns the requests and
/// the records too large to send at all.
pub(crate) fn plan<R: Outbound>(
    records: impl IntoIterator<Item = R>,
    limits: Limits,
) -> (Vec<Vec<R>>, Vec<R>) {
    let mut requests = Vec::new();
    let mut oversized = Vec::new();
    let mut request: Vec<R> = Vec::new();
    let mut request_bytes = 0usize;
    for record in records {
        let size = record.size();
        if size > limits.max_record_bytes {
            oversized.push(record);
            continue;
        }
        if request.len() == limits.max_records || request_bytes + size > limits.max_call_bytes {
            requests.push(std::mem::take(&mut request));
            request_bytes = 0;
        }
        request_bytes += size;
        request.push(record);
    }
    if !request.is_empty() {
        requests.push(request);
    }
    (requests, oversized)
}

/// What the request tasks of one sink share.
#[derive(Debug)]
pub(crate) struct Delivery<R: Outbound> {
    name: String,
    api: Arc<dyn PutApi<R>>,
    settings: DeliverySettings,
    /// No call before this instant: set when a call is throttled.
    paused_until: Mutex<Option<Instant>>,
    errors: Mutex<Option<ErrorOutput>>,
}

impl<R: Outbound> Delivery<R> {
    async fn wait_if_paused(&self) {
        // Another request may extend the pause while this one waits.
        loop {
            let until = *self
                .paused_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut p = self
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
    }

    /// Sends `records` until each is accepted or out of attempts; then acknowledges `ack`.
    pub(crate) async fn deliver(&self, records: Vec<R>, ack: Ack) -> Result<()> {
        let started = Instant::now();
        // Index into `records` → the last error of a record still to deliver.
        let mut todo: BTreeMap<usize, (String, String)> = (0..records.len())
            .map(|i| (i, (String::new(), String::new())))
            .collect();
        // Calls made, and failed calls that count against `max_attempts`: a throttled call
        // does not (throttling is bounded by `max_retry_time` only, so that a busy stream slows
        // the pipeline down instead of filling the error output).
        let mut calls = 0u32;
        let mut failures = 0u32;
        while !todo.is_empty() {
            calls += 1;
            self.wait_if_paused().await;
            let indices: Vec<usize> = todo.keys().copied().collect();
            let batch: Vec<R> = indices.iter().map(|&i| records[i].clone()).collect();
            let throttled = match self.api.put(&batch).await {
                Ok(outcome) => {
                    if outcome.len() != indices.len() {
                        return Err(Error::sink(
                            &self.name,
                            format!("{} answers for {} records", outcome.len(), indices.len()),
                        ));
                    }
                    let mut throttled = false;
                    for (i, result) in indices.into_iter().zip(outcome) {
                        match result {
                            None => {
                                todo.remove(&i);
                            }
                            Some(e) => {
                                throttled |= self.api.throttling_codes().contains(&e.0.as_str());
                                todo.insert(i, e);
                            }
                        }
                    }
                    throttled
                }
                Err(CallError::Fatal(message)) => {
                    // The batch is not acknowledged: its input is read again after a restart.
                    return Err(Error::sink(&self.name, message));
                }
                Err(CallError::Throttled { code, message }) => {
                    for e in todo.values_mut() {
                        *e = (code.clone(), message.clone());
                    }
                    true
                }
                Err(CallError::Transient { code, message }) => {
                    for e in todo.values_mut() {
                        *e = (code.clone(), message.clone());
                    }
                    false
                }
            };
            if todo.is_empty() {
                break;
            }
            let wait = self.settings.backoff(calls);
            if throttled {
                // Every request of the sink waits, not just this one.
                self.pause(wait);
            } else {
                failures += 1;
            }
            if failures >= self.settings.max_attempts
                || started.elapsed() + wait >= self.settings.max_retry_time
            {
                return self.give_up(&records, todo, calls, ack).await;
            }
            tokio::time::sleep(wait).await;
        }
        ack.acknowledge();
        Ok(())
    }

    /// The error output, or why `what` cannot be kept without one.
    pub(crate) fn error_output(&self, what: impl FnOnce() -> String) -> Result<ErrorOutput> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                Error::sink(
                    &self.name,
                    format!("{}, and there is no error output to keep them", what()),
                )
            })
    }

    /// Records that ran out of attempts go to the error output with their last error; the batch
    /// counts as stored once they are stored there.
    async fn give_up(
        &self,
        records: &[R],
        failed: BTreeMap<usize, (String, String)>,
        attempts: u32,
        ack: Ack,
    ) -> Result<()> {
        let count = failed.len();
        let errors = self.error_output(|| {
            format!("{count} records could not be delivered after {attempts} attempts")
        })?;
        tracing::warn!(
            sink = %self.name,
            records = failed.len(),
            attempts,
            "delivery failed; records go to the error output"
        );
        let now = now_ms();
        let rows = failed
            .into_iter()
            .map(|(i, (code, message))| ErrorRecord {
                statement: None,
                stage: ErrorStage::Sink,
                attempts,
                kind: code,
                reason: format!("{} after {attempts} attempts: {message}", self.name),
                record: records[i].as_error_record(now),
            })
            .collect::<Vec<_>>();
        errors.send(rows, ack.split()).await?;
        ack.acknowledge();
        Ok(())
    }
}

/// Sends requests with bounded concurrency and reports the first failure.
#[derive(Debug)]
pub(crate) struct Dispatcher<R: Outbound> {
    name: String,
    delivery: Arc<Delivery<R>>,
    requests: JoinSet<Result<()>>,
    permits: Arc<Semaphore>,
}

impl<R: Outbound> Dispatcher<R> {
    pub(crate) fn new(name: String, api: Arc<dyn PutApi<R>>, settings: DeliverySettings) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            delivery: Arc::new(Delivery {
                name: name.clone(),
                api,
                settings,
                paused_until: Mutex::new(None),
                errors: Mutex::new(None),
            }),
            name,
            requests: JoinSet::new(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn set_error_output(&self, errors: ErrorOutput) {
        *self
            .delivery
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(errors);
    }

    /// Waits for finished requests without blocking; the first failure stops the sink.
    fn reap(&mut self) -> Result<()> {
        while let Some(done) = self.requests.try_join_next() {
            done.map_err(|e| Error::sink(&self.name, format!("a request task failed: {e}")))??;
        }
        Ok(())
    }

    /// Sends one request in the background (waiting while `max_concurrent_requests` are in
    /// flight); `ack` completes once every record is accepted or in the error output.
    pub(crate) async fn send(&mut self, records: Vec<R>, ack: Ack) -> Result<()> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::sink(&self.name, "the sink is closed"))?;
        let delivery = Arc::clone(&self.delivery);
        self.requests.spawn(async move {
            let result = delivery.deliver(records, ack).await;
            drop(permit);
            result
        });
        self.reap()
    }

    /// Records that cannot be sent at all go to the error output as `kind`, with `why` as the
    /// reason; `ack` completes once they are stored there.
    pub(crate) async fn reject(
        &self,
        records: Vec<R>,
        kind: &str,
        why: impl Fn(&R) -> String,
        ack: Ack,
    ) -> Result<()> {
        let count = records.len();
        let errors = self
            .delivery
            .error_output(|| format!("{count} records cannot be sent ({kind})"))?;
        let now = now_ms();
        let rows = records
            .iter()
            .map(|r| ErrorRecord {
                statement: None,
                stage: ErrorStage::Sink,
                attempts: 0,
                kind: kind.to_owned(),
                reason: why(r),
                record: r.as_error_record(now),
            })
            .collect();
        errors.send(rows, ack).await
    }

    /// Waits for every request in flight.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        while let Some(done) = self.requests.join_next().await {
            done.map_err(|e| Error::sink(&self.name, format!("a request task failed: {e}")))??;
        }
        Ok(())
    }
}
