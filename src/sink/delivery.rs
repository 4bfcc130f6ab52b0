//! What the AWS sinks share: per-record delivery with partial-failure retries, paced calls, and
//! the hand-over of undeliverable records to the error output.
//!
//! A sink turns its rows into service records, groups them into requests with [`plan`], and hands
//! them to a [`Dispatcher`]. The dispatcher keeps one queue of records to send; a few workers take
//! calls' worth of records from it (records due for a retry first, then new ones, within the
//! service's limits) and send them with the service's [`PutApi`]. A record that fails goes back
//! into the queue, due again after a jittered back-off (growing with its failed calls; a throttled
//! record waits the first back-off, the window paces it), and travels with a later call: a
//! request's failed tail never holds up the records behind it. Records out of attempts go to the
//! error output with their last error code; a batch's acknowledgement completes once each of its
//! records is either accepted or stored there.
//!
//! Pacing: the number of calls in flight is a window between 1 and `max_concurrent_requests`,
//! adjusted after each call by the shares `a` of its records that were accepted and `f` that were
//! throttled (a whole call refused as throttled counts as `f = 1`): `w ← w + a/w − f·w/2`.
//! Accepted records open the window additively, throttled ones close it multiplicatively in
//! proportion (server errors do neither), so a stream that is
//! merely busy settles at a smaller window (about 2 of 4 calls in flight when 30 % of the records
//! are refused) instead of stalling, and one that refuses most records gets one call at a time.
//! A call refused whole, or one with most of its records throttled, also pauses every call of the
//! sink for a back-off that grows while it lasts.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ErrorOutput, ErrorRecord, ErrorStage};
use crate::ack::Ack;
use crate::record::now_ms;
use crate::record::Record;
use crate::{Error, Result};

/// The builder methods `encryption`, `format` and `delivery_settings` of a sink that puts records
/// (Firehose, Kinesis), whose builder has the fields `encryption`, `format` and `settings`; the
/// attributes given document `format`.
macro_rules! record_sink_setters {
    ($(#[$format_doc:meta])*) => {
        /// Seals each record in its own envelope with KMS envelope encryption (see
        /// [`crate::crypto`]); the records' size limits apply to the envelopes.
        pub fn encryption(mut self, encryptor: $crate::crypto::EnvelopeEncryptor) -> Self {
            self.encryption = Some(encryptor);
            self
        }

        $(#[$format_doc])*
        pub fn format(mut self, format: $crate::OutputFormat) -> Self {
            self.format = format;
            self
        }

        /// Retry and concurrency settings.
        pub fn delivery_settings(mut self, settings: $crate::sink::DeliverySettings) -> Self {
            self.settings = settings;
            self
        }
    };
}
pub(crate) use record_sink_setters;

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

/// The service's request entries for `records`, made by `entry`; a record whose entry cannot be
/// built fails the call.
pub(crate) fn entries<R, T, E: fmt::Display>(
    records: &[R],
    entry: impl Fn(&R) -> std::result::Result<T, E>,
) -> std::result::Result<Vec<T>, CallError> {
    records
        .iter()
        .map(|r| entry(r).map_err(|e| CallError::Fatal(e.to_string())))
        .collect()
}

/// The outcome of each of the `sent` records of a call from the service's answers, in order;
/// `error` reads an answer's error code and message. Answers that do not match the records sent
/// fail the call (it is retried).
pub(crate) fn outcomes<A>(
    answers: Vec<A>,
    sent: usize,
    error: impl Fn(A) -> Option<(String, String)>,
) -> CallResult {
    if answers.len() != sent {
        return Err(CallError::Transient {
            code: "InvalidResponse".into(),
            message: format!("{} answers for {} records", answers.len(), sent),
        });
    }
    Ok(answers.into_iter().map(error).collect())
}

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

/// Records waiting to be sent, for the first time or again, with the acknowledgement they owe.
struct Pending<R> {
    records: Vec<R>,
    /// The last error of each record (empty strings before its first call).
    errors: Vec<(String, String)>,
    /// Acknowledged once every record is accepted or stored in the error output.
    ack: Ack,
    /// Calls that carried these records.
    calls: u32,
    /// Failed calls that count against `max_attempts` (throttling does not).
    failures: u32,
    /// When the first call carrying them was made.
    first_call: Option<Instant>,
    /// Not sent again before this.
    not_before: Instant,
    bytes: usize,
}

impl<R: Outbound> Pending<R> {
    fn new(records: Vec<R>, ack: Ack, now: Instant) -> Self {
        let bytes = records.iter().map(Outbound::size).sum();
        Self {
            errors: vec![(String::new(), String::new()); records.len()],
            records,
            ack,
            calls: 0,
            failures: 0,
            first_call: None,
            not_before: now,
            bytes,
        }
    }

    /// Splits off the records from `at` on, with a split of the acknowledgement.
    fn split_off(&mut self, at: usize) -> Self {
        let records = self.records.split_off(at);
        let bytes = records.iter().map(Outbound::size).sum();
        self.bytes -= bytes;
        Self {
            errors: self.errors.split_off(at),
            records,
            ack: self.ack.split(),
            calls: self.calls,
            failures: self.failures,
            first_call: self.first_call,
            not_before: self.not_before,
            bytes,
        }
    }
}

/// The queue and the pacing of one sink.
struct State<R> {
    queue: VecDeque<Pending<R>>,
    queued_records: usize,
    queued_bytes: usize,
    in_flight: usize,
    /// Calls allowed in flight, between 1 and `max_concurrent_requests`.
    window: f64,
    /// No call before this: set when calls are throttled.
    paused_until: Option<Instant>,
    /// Calls in a row refused whole or mostly throttled: how long the pause is.
    throttled_in_a_row: u32,
    /// Records being handed to the error output.
    handing_over: usize,
    /// Why the sink cannot go on.
    failed: Option<String>,
    /// The dispatcher is gone: workers stop.
    closed: bool,
    workers_started: bool,
}

/// What the dispatcher and its workers share.
struct Shared<R: Outbound> {
    name: String,
    api: Arc<dyn PutApi<R>>,
    settings: DeliverySettings,
    limits: Limits,
    state: Mutex<State<R>>,
    changed: Notify,
    errors: Mutex<Option<ErrorOutput>>,
}

impl<R: Outbound> Shared<R> {
    fn state(&self) -> std::sync::MutexGuard<'_, State<R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error output, or why `what` cannot be kept without one.
    fn error_output(&self, what: impl FnOnce() -> String) -> Result<ErrorOutput> {
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

    /// Takes a call's worth of records that are due: in queue order (retries are queued in
    /// front), within the service's limits, splitting the last entry when it does not fit.
    fn take_call(&self, st: &mut State<R>, now: Instant) -> Vec<Pending<R>> {
        let mut parts = Vec::new();
        let (mut records, mut bytes) = (0usize, 0usize);
        let mut i = 0;
        while i < st.queue.len() && records < self.limits.max_records {
            if st.queue[i].not_before > now {
                i += 1;
                continue;
            }
            let entry = &st.queue[i];
            let (mut k, mut b) = (0usize, 0usize);
            while k < entry.records.len()
                && records + k < self.limits.max_records
                && bytes + b + entry.records[k].size() <= self.limits.max_call_bytes
            {
                b += entry.records[k].size();
                k += 1;
            }
            if k == 0 {
                break;
            }
            let part = if k == entry.records.len() {
                st.queue.remove(i).expect("an entry at i")
            } else {
                let tail = st.queue[i].split_off(k);
                i += 1;
                std::mem::replace(&mut st.queue[i - 1], tail)
            };
            records += part.records.len();
            bytes += part.bytes;
            parts.push(part);
        }
        st.queued_records -= records;
        st.queued_bytes -= bytes;
        parts
    }

    /// Waits for a call to make: records due, a free place in the window, no pause. `None` when
    /// the sink failed or the dispatcher is gone.
    async fn next_call(&self) -> Option<Vec<Pending<R>>> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake = {
                let mut st = self.state();
                if st.failed.is_some() || st.closed {
                    return None;
                }
                let now = Instant::now();
                let paused = st.paused_until.filter(|&t| t > now);
                if paused.is_none() && (st.in_flight as f64) < st.window.floor().max(1.0) {
                    let parts = self.take_call(&mut st, now);
                    if !parts.is_empty() {
                        st.in_flight += 1;
                        drop(st);
                        // The queue has room again for a waiting sender.
                        self.changed.notify_waiters();
                        return Some(parts);
                    }
                }
                paused.or_else(|| {
                    st.queue
                        .iter()
                        .map(|e| e.not_before)
                        .filter(|&t| t > now)
                        .min()
                })
            };
            match wake {
                Some(t) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(t) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// A worker: makes calls until the sink fails or the dispatcher is gone.
    async fn work(self: Arc<Self>) {
        while let Some(parts) = self.next_call().await {
            let started = Instant::now();
            let records: Vec<R> = parts
                .iter()
                .flat_map(|p| p.records.iter().cloned())
                .collect();
            let result = self.api.put(&records).await;
            let give_up = self.settle(parts, records.len(), result, started);
            if !give_up.is_empty() {
                if let Err(e) = self.hand_over(give_up).await {
                    self.fail(e.to_string());
                }
            }
            self.changed.notify_waiters();
        }
    }

    fn fail(&self, message: String) {
        let mut st = self.state();
        st.failed.get_or_insert(message);
        drop(st);
        self.changed.notify_waiters();
    }

    /// Takes in the outcome of a call: accepted parts are acknowledged, failed records queued
    /// again (or returned, out of attempts), and the window adjusted.
    fn settle(
        &self,
        parts: Vec<Pending<R>>,
        sent: usize,
        result: CallResult,
        started: Instant,
    ) -> Vec<Pending<R>> {
        let (outcome, whole_call_throttled) = match result {
            Ok(outcome) if outcome.len() == sent => (outcome, false),
            Ok(outcome) => {
                drop(parts);
                self.in_flight_done();
                self.fail(format!("{} answers for {sent} records", outcome.len()));
                return Vec::new();
            }
            Err(CallError::Fatal(message)) => {
                // Not acknowledged: the input is read again after a restart.
                drop(parts);
                self.in_flight_done();
                self.fail(message);
                return Vec::new();
            }
            Err(CallError::Throttled { code, message }) => {
                (vec![Some((code, message)); sent], true)
            }
            Err(CallError::Transient { code, message }) => {
                (vec![Some((code, message)); sent], false)
            }
        };
        let now = Instant::now();
        let throttling = self.api.throttling_codes();
        let mut throttled = 0usize;
        let mut accepted = 0usize;
        let mut retry = Vec::new();
        let mut give_up = Vec::new();
        let mut outcome = outcome.into_iter();
        for part in parts {
            let mut failed = Vec::new();
            let mut errors = Vec::new();
            let mut counted = false;
            for (record, result) in part.records.into_iter().zip(outcome.by_ref()) {
                if let Some(error) = result {
                    if whole_call_throttled || throttling.contains(&error.0.as_str()) {
                        throttled += 1;
                    } else {
                        counted = true;
                    }
                    failed.push(record);
                    errors.push(error);
                } else {
                    accepted += 1;
                }
            }
            if failed.is_empty() {
                part.ack.acknowledge();
                continue;
            }
            let bytes = failed.iter().map(Outbound::size).sum();
            let calls = part.calls + 1;
            let failures = part.failures + u32::from(counted);
            let first_call = part.first_call.unwrap_or(started);
            // A record that failed (a server error) waits longer each time; one that was only
            // throttled is paced by the window and waits the first back-off again.
            let wait = self.settings.backoff(if counted { failures } else { 1 });
            let entry = Pending {
                records: failed,
                errors,
                ack: part.ack,
                calls,
                failures,
                first_call: Some(first_call),
                not_before: now + wait,
                bytes,
            };
            if entry.failures >= self.settings.max_attempts
                || first_call.elapsed() + wait >= self.settings.max_retry_time
            {
                give_up.push(entry);
            } else {
                retry.push(entry);
            }
        }
        // Accepted records open the window, throttled ones close it; other failures (server
        // errors) leave it as it is.
        let a = accepted as f64 / sent.max(1) as f64;
        let f = throttled as f64 / sent.max(1) as f64;
        let mut st = self.state();
        st.in_flight -= 1;
        let w = st.window;
        st.window =
            (w + a / w - f * w / 2.0).clamp(1.0, self.settings.max_concurrent_requests as f64);
        if whole_call_throttled || f >= 0.5 {
            st.throttled_in_a_row += 1;
            let pause = self.settings.backoff(st.throttled_in_a_row).mul_f64(f);
            let until = now + pause;
            if st.paused_until.is_none_or(|t| t < until) {
                st.paused_until = Some(until);
            }
        } else {
            st.throttled_in_a_row = 0;
        }
        for entry in retry.into_iter().rev() {
            st.queued_records += entry.records.len();
            st.queued_bytes += entry.bytes;
            st.queue.push_front(entry);
        }
        st.handing_over += give_up.iter().map(|e| e.records.len()).sum::<usize>();
        give_up
    }

    fn in_flight_done(&self) {
        self.state().in_flight -= 1;
    }

    /// Records that ran out of attempts go to the error output with their last error; their
    /// batch counts as stored once they are stored there.
    async fn hand_over(&self, entries: Vec<Pending<R>>) -> Result<()> {
        let count: usize = entries.iter().map(|e| e.records.len()).sum();
        let result = async {
            let errors = self.error_output(|| {
                format!("{count} records could not be delivered after their attempts")
            })?;
            tracing::warn!(
                sink = %self.name,
                records = count,
                "delivery failed; records go to the error output"
            );
            let now = now_ms();
            for entry in entries {
                let attempts = entry.calls;
                let rows = entry
                    .records
                    .iter()
                    .zip(entry.errors)
                    .map(|(record, (code, message))| {
                        ErrorRecord::new(
                            ErrorStage::Sink,
                            code,
                            format!("{} after {attempts} attempts: {message}", self.name),
                            record.as_error_record(now),
                        )
                        .with_attempts(attempts)
                    })
                    .collect::<Vec<_>>();
                errors.send(rows, entry.ack.split()).await?;
                entry.ack.acknowledge();
            }
            Ok(())
        }
        .await;
        self.state().handing_over -= count;
        result
    }
}

/// Sends records with paced, bounded concurrency and reports the first failure.
pub(crate) struct Dispatcher<R: Outbound> {
    shared: Arc<Shared<R>>,
}

impl<R: Outbound> fmt::Debug for Dispatcher<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<R: Outbound> Drop for Dispatcher<R> {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.changed.notify_waiters();
    }
}

impl<R: Outbound> Dispatcher<R> {
    pub(crate) fn new(
        name: String,
        api: Arc<dyn PutApi<R>>,
        settings: DeliverySettings,
        limits: Limits,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                name,
                api,
                limits,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    queued_records: 0,
                    queued_bytes: 0,
                    in_flight: 0,
                    window: settings.max_concurrent_requests as f64,
                    paused_until: None,
                    throttled_in_a_row: 0,
                    handing_over: 0,
                    failed: None,
                    closed: false,
                    workers_started: false,
                }),
                settings,
                changed: Notify::new(),
                errors: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.shared.name
    }

    pub(crate) fn set_error_output(&self, errors: ErrorOutput) {
        *self
            .shared
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(errors);
    }

    fn failure(&self, message: &str) -> Error {
        Error::sink(&self.shared.name, message.to_owned())
    }

    /// Queues `records` (waiting while the queue is full: about two windows' worth); `ack`
    /// completes once every record is accepted or in the error output.
    pub(crate) async fn send(&mut self, records: Vec<R>, ack: Ack) -> Result<()> {
        if records.is_empty() {
            ack.acknowledge();
            return Ok(());
        }
        let shared = &self.shared;
        let most = shared.settings.max_concurrent_requests * 2;
        let (max_records, max_bytes) = (
            shared.limits.max_records * most,
            shared.limits.max_call_bytes * most,
        );
        let mut entry = Some(Pending::new(records, ack, Instant::now()));
        loop {
            let notified = shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = shared.state();
                if let Some(m) = &st.failed {
                    return Err(self.failure(m));
                }
                let e = entry.as_ref().expect("queued once");
                if st.queued_records == 0
                    || (st.queued_records + e.records.len() <= max_records
                        && st.queued_bytes + e.bytes <= max_bytes)
                {
                    let e = entry.take().expect("queued once");
                    st.queued_records += e.records.len();
                    st.queued_bytes += e.bytes;
                    st.queue.push_back(e);
                    if !st.workers_started {
                        st.workers_started = true;
                        for _ in 0..shared.settings.max_concurrent_requests {
                            tokio::spawn(Arc::clone(shared).work());
                        }
                    }
                    drop(st);
                    shared.changed.notify_waiters();
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Groups `records` into requests within the service's limits and queues each under a split
    /// of `ack`; records too large for any request go to the error output as `oversized`, with
    /// `why` as the reason.
    pub(crate) async fn send_planned(
        &mut self,
        records: Vec<R>,
        why: impl Fn(&R) -> String,
        ack: &Ack,
    ) -> Result<()> {
        let (requests, oversized) = plan(records, self.shared.limits);
        for request in requests {
            self.send(request, ack.split()).await?;
        }
        if !oversized.is_empty() {
            self.reject(oversized, "oversized", why, ack.split())
                .await?;
        }
        Ok(())
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
            .shared
            .error_output(|| format!("{count} records cannot be sent ({kind})"))?;
        let now = now_ms();
        let rows = records
            .iter()
            .map(|r| {
                ErrorRecord::new(ErrorStage::Sink, kind, why(r), r.as_error_record(now))
                    .with_attempts(0)
            })
            .collect();
        errors.send(rows, ack).await
    }

    /// Waits until every queued record is accepted or in the error output; the first failure
    /// of the sink is returned (and what is still queued is dropped unacknowledged).
    pub(crate) async fn flush(&mut self) -> Result<()> {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.shared.state();
                if let Some(m) = st.failed.clone() {
                    st.queue.clear();
                    st.queued_records = 0;
                    st.queued_bytes = 0;
                    return Err(self.failure(&m));
                }
                if st.queue.is_empty() && st.in_flight == 0 && st.handing_over == 0 {
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}
