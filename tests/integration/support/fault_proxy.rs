//! A fault-injecting HTTP/1.1 proxy on a free 127.0.0.1 port, put in front of moto to check that a
//! Kinesis consumer survives throttling and iterator expiry, and that a Firehose sink survives
//! throttled, failed and partially failed batches.
//!
//! Each Kinesis `GetRecords` request is, with the configured probabilities, answered by the proxy
//! itself with `ProvisionedThroughputExceededException` or `ExpiredIteratorException` (HTTP 400,
//! as the service does) or `InternalFailure` (HTTP 500). KMS requests may be answered with
//! `ThrottlingException`. Each Firehose `PutRecordBatch` request is, likewise, answered by the proxy
//! with `ServiceUnavailableException` (HTTP 503) or `InternalFailure` (HTTP 500); when let through,
//! each of its records may be drawn to fail. Failing records are taken out of the request before
//! it is forwarded, so moto never stores them, and the answer gets a `ServiceUnavailableException`
//! entry in their place (when every record fails, nothing is forwarded and the proxy answers
//! itself). A sink that drops records reported as failed therefore loses them, and a test can see
//! it. Every other request, and the `GetRecords` requests and the `PutRecordBatch` requests with
//! no failing record that are let through, are forwarded unchanged to the upstream port. The draws
//! come from a small PRNG seeded by the test, so a run is reproducible for a given order of
//! requests.
//!
//! Blocking std networking, one thread per client connection (tokio's `net` feature is not
//! enabled). Sockets are read with a short timeout so that every thread notices when the proxy is
//! dropped, and a peer that stalls in the middle of a message is given up on after 30 s.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a blocked read waits before checking the stop flag and the deadline.
const POLL: Duration = Duration::from_millis(100);
/// How long a peer may take to send a whole message once it has started one (or, upstream, to
/// answer a request), and to accept a write.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest message head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// The `X-Amz-Target` of Firehose's `PutRecordBatch`.
const PUT_RECORD_BATCH: &str = "Firehose_20150804.PutRecordBatch";
/// The content type of the AWS JSON 1.1 protocol, which Firehose and Kinesis speak.
const AMZ_JSON: &str = "application/x-amz-json-1.1";

/// Probabilities of answering with an injected error. All zero by default (nothing injected).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Probability, per `GetRecords` request, of `ProvisionedThroughputExceededException`.
    pub(crate) throttle: f64,
    /// Probability, per `GetRecords` request, of `ExpiredIteratorException`.
    pub(crate) expire: f64,
    /// Probability, per `GetRecords` request, of `InternalFailure` (HTTP 500, a server error).
    pub(crate) get_records_error: f64,
    /// Probability, per `PutRecordBatch` request, of `ServiceUnavailableException` (HTTP 503,
    /// nothing forwarded).
    pub(crate) batch_throttle: f64,
    /// Probability, per `PutRecordBatch` request, of `InternalFailure` (HTTP 500, nothing
    /// forwarded).
    pub(crate) batch_error: f64,
    /// Probability, per record of a `PutRecordBatch` request let through, that the record fails:
    /// it is taken out of the request before forwarding, so moto does not store it, and its entry
    /// of the answer is a `ServiceUnavailableException` failure. When every record of a request
    /// fails, nothing is forwarded and the proxy answers itself.
    pub(crate) record_failure: f64,
    /// The error code of a failed record: `InternalFailure` when set, else
    /// `ServiceUnavailableException` (Firehose's two per-record codes; the second asks the client
    /// to slow down).
    pub(crate) record_internal_failure: bool,
    /// Probability, per KMS request (`TrentService.*`: `GenerateDataKey`, `Decrypt`), of
    /// `ThrottlingException` (HTTP 400, nothing forwarded).
    pub(crate) kms_throttle: f64,
    /// Seed of the PRNG that draws the faults.
    pub(crate) seed: u64,
}

/// What was injected into Firehose `PutRecordBatch` calls so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FirehoseInjected {
    /// `PutRecordBatch` requests seen, injected into or not.
    pub(crate) calls: u64,
    /// Requests answered with `ServiceUnavailableException`.
    pub(crate) throttled_calls: u64,
    /// Requests answered with `InternalFailure`.
    pub(crate) failed_calls: u64,
    /// Records reported to the client as failed by injection (and, being taken out of the
    /// request, not stored by moto), in calls answered with HTTP 200. Not counted when moto
    /// answered the rest of the call with an error, which the client sees as a failed call.
    pub(crate) failed_records: u64,
}

/// A running proxy, stopped on drop.
pub(crate) struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// State shared by the accepting thread and the connection threads.
struct Shared {
    upstream_port: u16,
    throttle: f64,
    expire: f64,
    get_records_error: f64,
    get_records_errors: AtomicU64,
    batch_throttle: f64,
    batch_error: f64,
    record_failure: f64,
    record_internal_failure: bool,
    kms_throttle: f64,
    kms_throttles: AtomicU64,
    rng: Mutex<u64>,
    throttles: AtomicU64,
    expiries: AtomicU64,
    batch_throttles: AtomicU64,
    batch_errors: AtomicU64,
    failed_records: AtomicU64,
    /// Number of records in each `PutRecordBatch` request seen, in arrival order.
    batch_sizes: Mutex<Vec<usize>>,
    stop: Arc<AtomicBool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Throttle,
    Expire,
    SlowDown,
    InternalFailure,
    KmsThrottle,
}

impl Fault {
    /// The whole HTTP response the service would send for this error.
    fn response(self) -> Vec<u8> {
        let (status, kind, message) = match self {
            Fault::Throttle => (
                "400 Bad Request",
                "ProvisionedThroughputExceededException",
                "Rate exceeded for shard (injected)",
            ),
            Fault::Expire => (
                "400 Bad Request",
                "ExpiredIteratorException",
                "Iterator expired (injected)",
            ),
            Fault::SlowDown => (
                "503 Service Unavailable",
                "ServiceUnavailableException",
                "Slow down (injected)",
            ),
            Fault::InternalFailure => (
                "500 Internal Server Error",
                "InternalFailure",
                "Internal failure (injected)",
            ),
            Fault::KmsThrottle => (
                "400 Bad Request",
                "ThrottlingException",
                "Rate exceeded (injected)",
            ),
        };
        let body = format!(r#"{{"__type":"{kind}","message":"{message}"}}"#);
        format!(
            "HTTP/1.1 {status}\r\n\
             Content-Type: application/x-amz-json-1.1\r\n\
             x-amzn-ErrorType: {kind}\r\n\
             Content-Length: {}\r\n\
             \r\n\
             {body}",
            body.len()
        )
        .into_bytes()
    }
}

/// splitmix64: a tiny, good-enough deterministic generator.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Shared {
    fn new(upstream_port: u16, faults: Faults) -> Self {
        Shared {
            upstream_port,
            throttle: faults.throttle,
            expire: faults.expire,
            get_records_error: faults.get_records_error,
            get_records_errors: AtomicU64::new(0),
            batch_throttle: faults.batch_throttle,
            batch_error: faults.batch_error,
            record_failure: faults.record_failure,
            record_internal_failure: faults.record_internal_failure,
            kms_throttle: faults.kms_throttle,
            kms_throttles: AtomicU64::new(0),
            rng: Mutex::new(faults.seed),
            throttles: AtomicU64::new(0),
            expiries: AtomicU64::new(0),
            batch_throttles: AtomicU64::new(0),
            batch_errors: AtomicU64::new(0),
            failed_records: AtomicU64::new(0),
            batch_sizes: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The next draw of the PRNG, uniform in [0, 1).
    fn uniform(&self) -> f64 {
        let x = splitmix64(&mut self.rng.lock().unwrap_or_else(PoisonError::into_inner));
        // 53 random bits.
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Draws whether to inject a fault into a `GetRecords` request, and counts it.
    fn draw(&self) -> Option<Fault> {
        let u = self.uniform();
        if u < self.throttle {
            self.throttles.fetch_add(1, Ordering::Relaxed);
            Some(Fault::Throttle)
        } else if u < self.throttle + self.expire {
            self.expiries.fetch_add(1, Ordering::Relaxed);
            Some(Fault::Expire)
        } else if u < self.throttle + self.expire + self.get_records_error {
            self.get_records_errors.fetch_add(1, Ordering::Relaxed);
            Some(Fault::InternalFailure)
        } else {
            None
        }
    }

    /// Draws whether to answer a KMS request with `ThrottlingException`, and counts it.
    fn draw_kms(&self) -> Option<Fault> {
        (self.uniform() < self.kms_throttle).then(|| {
            self.kms_throttles.fetch_add(1, Ordering::Relaxed);
            Fault::KmsThrottle
        })
    }

    /// Records a `PutRecordBatch` request (and its number of records), then draws whether to
    /// answer it with an injected error, and counts it.
    fn draw_batch(&self, request: &Message) -> Option<Fault> {
        let records = serde_json::from_slice::<serde_json::Value>(&request.body)
            .ok()
            .and_then(|body| body.get("Records")?.as_array().map(Vec::len))
            .unwrap_or(0);
        self.batch_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(records);
        let u = self.uniform();
        if u < self.batch_throttle {
            self.batch_throttles.fetch_add(1, Ordering::Relaxed);
            Some(Fault::SlowDown)
        } else if u < self.batch_throttle + self.batch_error {
            self.batch_errors.fetch_add(1, Ordering::Relaxed);
            Some(Fault::InternalFailure)
        } else {
            None
        }
    }

    /// Draws, for each record of a `PutRecordBatch` request that is let through, whether it fails
    /// (probability `record_failure`), and takes the failing records out of the request so that
    /// moto never stores them. Returns the request to forward (`None` when no record is left) and,
    /// for each record of the request as sent, whether it fails; when none fails (the flags are
    /// then all `false`, or empty when nothing was drawn), the request is returned unchanged.
    ///
    /// The new body is the old one re-serialised without the failing records, and only the value
    /// of `Content-Length` changes in the head: every other header is kept byte for byte. The AWS
    /// SDK signs the request, body included, so its signature no longer matches; moto does not
    /// verify signatures, so changing the body is fine here.
    fn drop_failing_records(&self, request: Message) -> (Option<Message>, Vec<bool>) {
        if self.record_failure <= 0.0 {
            return (Some(request), Vec::new());
        }
        let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
            return (Some(request), Vec::new());
        };
        let Some(records) = body
            .get_mut("Records")
            .and_then(serde_json::Value::as_array_mut)
        else {
            return (Some(request), Vec::new());
        };
        // A call without records goes to moto as sent, to be answered as the service would.
        if records.is_empty() {
            return (Some(request), Vec::new());
        }
        let failing: Vec<bool> = records
            .iter()
            .map(|_| self.uniform() < self.record_failure)
            .collect();
        if !failing.contains(&true) {
            return (Some(request), failing);
        }
        let mut fails = failing.iter();
        // `retain` visits the records once each, in order.
        records.retain(|_| !fails.next().copied().unwrap_or(false));
        if records.is_empty() {
            return (None, failing);
        }
        let body = serde_json::to_vec(&body).expect("serialise a PutRecordBatch request");
        (Some(request.with_body(body)), failing)
    }

    /// The answer to a `PutRecordBatch` request from which the records flagged in `failing` (one
    /// flag per record of the request as sent) were taken out. `response` is moto's answer to the
    /// records forwarded, `None` when none was. The answer has one entry per record of the
    /// request as sent, in order: a forwarded record takes the next entry of moto's
    /// `RequestResponses`, a failing one gets a `ServiceUnavailableException` failure;
    /// `FailedPutCount` counts the failed entries. The injected failures are counted.
    ///
    /// An error answer from moto is passed on unchanged (and nothing counted): the whole call
    /// failed, and the client sends all its records again.
    fn merge_failures(&self, response: Option<Message>, failing: &[bool]) -> Message {
        let injected = failing.iter().filter(|&&failed| failed).count();
        let response = match response {
            Some(response) => response,
            // Every record failed, so nothing was forwarded: the proxy answers itself, from an
            // answer with no entry yet.
            None => Message {
                head: format!("HTTP/1.1 200 OK\r\nContent-Type: {AMZ_JSON}\r\n\r\n").into_bytes(),
                body: br#"{"FailedPutCount":0,"Encrypted":false,"RequestResponses":[]}"#.to_vec(),
            },
        };
        if injected == 0 || response.status() != Some(200) {
            return response;
        }
        let mut body: serde_json::Value =
            serde_json::from_slice(&response.body).unwrap_or_else(|e| {
                panic!(
                    "fault proxy: a PutRecordBatch answer that is not JSON ({e}): {}",
                    String::from_utf8_lossy(&response.body)
                )
            });
        let answers = body
            .get_mut("RequestResponses")
            .and_then(serde_json::Value::as_array_mut)
            .map(std::mem::take);
        let Some(answers) = answers else {
            panic!("fault proxy: a PutRecordBatch answer without RequestResponses: {body}");
        };
        let forwarded = failing.len() - injected;
        assert_eq!(
            answers.len(),
            forwarded,
            "fault proxy: {} entries in moto's PutRecordBatch answer for {forwarded} records \
             forwarded: {}",
            answers.len(),
            String::from_utf8_lossy(&response.body)
        );
        let mut answers = answers.into_iter();
        let entries: Vec<serde_json::Value> = failing
            .iter()
            .map(|&failed| {
                if failed && self.record_internal_failure {
                    serde_json::json!({
                        "ErrorCode": "InternalFailure",
                        "ErrorMessage": "Internal failure (injected)",
                    })
                } else if failed {
                    serde_json::json!({
                        "ErrorCode": "ServiceUnavailableException",
                        "ErrorMessage": "Slow down (injected)",
                    })
                } else {
                    answers.next().expect("one answer per record forwarded")
                }
            })
            .collect();
        let failed = entries
            .iter()
            .filter(|entry| entry.get("ErrorCode").is_some_and(|code| !code.is_null()))
            .count();
        body["RequestResponses"] = serde_json::Value::Array(entries);
        body["FailedPutCount"] = serde_json::Value::from(failed);
        self.failed_records
            .fetch_add(injected as u64, Ordering::Relaxed);
        let body = serde_json::to_vec(&body).expect("serialise a PutRecordBatch answer");
        Message {
            head: response.head,
            body,
        }
        .with_content_length()
    }
}

impl FaultProxy {
    /// Starts a proxy in front of 127.0.0.1:`upstream_port`.
    pub(crate) fn start(upstream_port: u16, faults: Faults) -> Self {
        assert!(
            faults.throttle >= 0.0
                && faults.expire >= 0.0
                && faults.get_records_error >= 0.0
                && faults.throttle + faults.expire + faults.get_records_error <= 1.0
                && faults.batch_throttle >= 0.0
                && faults.batch_error >= 0.0
                && faults.batch_throttle + faults.batch_error <= 1.0
                && (0.0..=1.0).contains(&faults.record_failure)
                && (0.0..=1.0).contains(&faults.kms_throttle),
            "fault probabilities must be >= 0, and add up to at most 1 per kind of request: \
             {faults:?}"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let port = listener.local_addr().expect("fault proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking fault proxy listener");
        let shared = Arc::new(Shared::new(upstream_port, faults));
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn the fault proxy")
        };
        FaultProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The endpoint URL to give AWS clients.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `(throttles, expiries)` injected so far.
    pub(crate) fn injected(&self) -> (u64, u64) {
        (
            self.shared.throttles.load(Ordering::Relaxed),
            self.shared.expiries.load(Ordering::Relaxed),
        )
    }

    /// `GetRecords` requests answered with `InternalFailure` so far.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    pub(crate) fn get_records_errors(&self) -> u64 {
        self.shared.get_records_errors.load(Ordering::Relaxed)
    }

    /// KMS requests answered with `ThrottlingException` so far.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    pub(crate) fn kms_throttled(&self) -> u64 {
        self.shared.kms_throttles.load(Ordering::Relaxed)
    }

    /// What was injected into Firehose `PutRecordBatch` calls so far.
    pub(crate) fn firehose_injected(&self) -> FirehoseInjected {
        FirehoseInjected {
            calls: self.put_record_batch_sizes().len() as u64,
            throttled_calls: self.shared.batch_throttles.load(Ordering::Relaxed),
            failed_calls: self.shared.batch_errors.load(Ordering::Relaxed),
            failed_records: self.shared.failed_records.load(Ordering::Relaxed),
        }
    }

    /// The number of records in each `PutRecordBatch` request seen so far (injected into or
    /// not), in arrival order.
    pub(crate) fn put_record_batch_sizes(&self) -> Vec<usize> {
        self.shared
            .batch_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Accepts connections until the proxy is dropped, then waits for the connection threads (which
/// notice the stop flag within [`POLL`]).
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || {
                        // Any IO error just ends this connection, as a failing proxy would.
                        let _ = serve(stream, &shared);
                    });
                if let Ok(worker) = spawned {
                    workers.push(worker);
                }
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
        workers.retain(|w| !w.is_finished());
    }
    for worker in workers {
        // A worker that panicked (chunked request) has already reported it.
        let _ = worker.join();
    }
}

/// Serves one client connection: one request at a time, until EOF.
fn serve(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut client = Conn::new(client, Arc::clone(&shared.stop))?;
    let mut upstream: Option<Conn> = None;
    loop {
        // Waiting for the next request may take as long as the client likes.
        client.deadline = None;
        let Some(request) = read_request(&mut client)? else {
            return Ok(());
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let target = request.header("x-amz-target");
        let get_records = target
            .as_deref()
            .is_some_and(|t| t.ends_with(".GetRecords"));
        let put_record_batch = target
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(PUT_RECORD_BATCH));
        let kms = target
            .as_deref()
            .is_some_and(|t| t.starts_with("TrentService."));
        let fault = if get_records {
            shared.draw()
        } else if put_record_batch {
            shared.draw_batch(&request)
        } else if kms {
            shared.draw_kms()
        } else {
            None
        };
        let reply = match fault {
            Some(fault) => fault.response(),
            None if put_record_batch => {
                let (request, failing) = shared.drop_failing_records(request);
                let response = match request {
                    Some(request) => Some(forward(&mut upstream, shared, &request)?),
                    None => None,
                };
                shared.merge_failures(response, &failing).into_bytes()
            }
            None => forward(&mut upstream, shared, &request)?.into_bytes(),
        };
        client.stream.write_all(&reply)?;
        client.stream.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// Sends `request` upstream and returns the response to give the client. A kept upstream
/// connection that turns out to be closed is replaced by a fresh one, once.
fn forward(upstream: &mut Option<Conn>, shared: &Shared, request: &Message) -> io::Result<Message> {
    loop {
        let reused = upstream.is_some();
        let mut conn = match upstream.take() {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(("127.0.0.1", shared.upstream_port))?;
                Conn::new(stream, Arc::clone(&shared.stop))?
            }
        };
        match exchange(&mut conn, request) {
            Ok(Some((response, keep))) => {
                if keep {
                    *upstream = Some(conn);
                }
                return Ok(response);
            }
            // Nothing came back on a kept connection the upstream had closed: retry on a new one.
            Ok(None) if reused => {}
            Err(e)
                if reused
                    && matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                    ) => {}
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection without answering",
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes a request upstream and reads the response; `None` when the connection closed before
/// any byte of a response.
fn exchange(conn: &mut Conn, request: &Message) -> io::Result<Option<(Message, bool)>> {
    conn.stream.write_all(&request.head)?;
    conn.stream.write_all(&request.body)?;
    conn.stream.flush()?;
    conn.deadline = Some(Instant::now() + IO_TIMEOUT);
    read_response(conn)
}

/// A socket and the bytes read from it but not consumed yet.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    stop: Arc<AtomicBool>,
    /// When reading must have completed; `None` while idle between messages.
    deadline: Option<Instant>,
}

impl Conn {
    fn new(stream: TcpStream, stop: Arc<AtomicBool>) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            stop,
            deadline: None,
        })
    }

    /// Reads more bytes into the buffer; `false` at EOF.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(io::Error::other("fault proxy stopped"));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if self.deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "fault proxy: peer stalled",
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a message head, up to and including the blank line; `None` at EOF before any byte.
    fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(self.buf.drain(..i + 4).collect()));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "fault proxy: message head too long",
                ));
            }
            if !self.buf.is_empty() && self.deadline.is_none() {
                self.deadline = Some(Instant::now() + IO_TIMEOUT);
            }
            if !self.fill()? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(truncated())
                };
            }
        }
    }

    /// Takes exactly `n` bytes.
    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Err(truncated());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Takes one line, without its CRLF.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..i + 2).collect();
                line.truncate(i);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "fault proxy: line too long",
                ));
            }
            if !self.fill()? {
                return Err(truncated());
            }
        }
    }

    /// Takes everything until the peer closes the connection.
    fn until_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? {}
        Ok(std::mem::take(&mut self.buf))
    }
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "fault proxy: message cut short",
    )
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("fault proxy: {what}"))
}

/// An HTTP message: its head (start line, headers and the blank line) and its body.
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Message {
    /// The value of the first header called `name` (case-insensitive), trimmed.
    fn header(&self, name: &str) -> Option<String> {
        String::from_utf8_lossy(&self.head)
            .split("\r\n")
            .skip(1)
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
    }

    /// The status code of a response.
    fn status(&self) -> Option<u16> {
        String::from_utf8_lossy(&self.head)
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        self.header("content-length")
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid(format!("bad Content-Length {v:?}")))
            })
            .transpose()
    }

    /// The head with any `Transfer-Encoding`/`Content-Length` replaced by the body's length.
    fn with_content_length(self) -> Self {
        let text = String::from_utf8_lossy(&self.head).into_owned();
        let mut head = String::with_capacity(text.len() + 32);
        for (i, line) in text.split("\r\n").filter(|l| !l.is_empty()).enumerate() {
            let framing = i > 0
                && line.split_once(':').is_some_and(|(key, _)| {
                    let key = key.trim();
                    key.eq_ignore_ascii_case("transfer-encoding")
                        || key.eq_ignore_ascii_case("content-length")
                });
            if !framing {
                head.push_str(line);
                head.push_str("\r\n");
            }
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        Message {
            head: head.into_bytes(),
            body: self.body,
        }
    }

    /// The message with `body` instead of its own: the value of its `Content-Length` header is
    /// set to the new length, and every other byte of the head is kept as it was.
    fn with_body(self, body: Vec<u8>) -> Self {
        let mut head = Vec::with_capacity(self.head.len() + 8);
        let mut rest = self.head.as_slice();
        let mut start_line = true;
        let mut replaced = false;
        while !rest.is_empty() {
            // The next line, with its CRLF.
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(rest.len(), |i| i + 2);
            let (line, tail) = rest.split_at(end);
            rest = tail;
            let name = line
                .iter()
                .position(|&b| b == b':')
                .map(|colon| &line[..colon]);
            match name {
                Some(name)
                    if !start_line && name.trim_ascii().eq_ignore_ascii_case(b"content-length") =>
                {
                    head.extend_from_slice(name);
                    head.extend_from_slice(format!(": {}\r\n", body.len()).as_bytes());
                    replaced = true;
                }
                _ => head.extend_from_slice(line),
            }
            start_line = false;
        }
        assert!(
            replaced,
            "fault proxy: no Content-Length to rewrite in {}",
            String::from_utf8_lossy(&self.head)
        );
        Message { head, body }
    }

    fn into_bytes(self) -> Vec<u8> {
        let mut bytes = self.head;
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request(conn: &mut Conn) -> io::Result<Option<Message>> {
    let Some(head) = conn.read_head()? else {
        return Ok(None);
    };
    let mut request = Message {
        head,
        body: Vec::new(),
    };
    assert!(
        !request.chunked(),
        "fault proxy: chunked request bodies are not supported (the AWS SDK sends Content-Length \
         for these calls): {}",
        String::from_utf8_lossy(&request.head)
    );
    if let Some(len) = request.content_length()? {
        request.body = conn.take(len)?;
    }
    Ok(Some(request))
}

/// Reads one response, skipping interim (1xx) ones, with its body framed by `Content-Length`
/// whatever the upstream used; the flag says whether the connection can be used again. `None`
/// when the connection closed before any byte.
fn read_response(conn: &mut Conn) -> io::Result<Option<(Message, bool)>> {
    loop {
        let Some(head) = conn.read_head()? else {
            return Ok(None);
        };
        let mut response = Message {
            head,
            body: Vec::new(),
        };
        let status = response.status().ok_or_else(|| {
            invalid(format!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(&response.head)
            ))
        })?;
        if (100..200).contains(&status) {
            continue;
        }
        let mut keep = !response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if status == 204 || status == 304 {
            return Ok(Some((response, keep)));
        }
        if response.chunked() {
            loop {
                let line = conn.line()?;
                let line = String::from_utf8_lossy(&line);
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    while !conn.line()?.is_empty() {}
                    break;
                }
                response.body.extend(conn.take(size)?);
                if conn.take(2)? != b"\r\n" {
                    return Err(invalid("chunk not followed by CRLF".into()));
                }
            }
            response = response.with_content_length();
        } else if let Some(len) = response.content_length()? {
            response.body = conn.take(len)?;
        } else {
            response.body = conn.until_eof()?;
            keep = false;
            response = response.with_content_length();
        }
        return Ok(Some((response, keep)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const JSON: &str = "application/x-amz-json-1.1";

    /// A fake upstream serving one connection, answering the n-th request (from 0) with
    /// `reply(n, request)`. Every request received is sent on the channel.
    fn fake_upstream_replying(
        reply: impl Fn(usize, &Message) -> String + Send + 'static,
    ) -> (u16, mpsc::Receiver<Vec<u8>>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake upstream");
        let port = listener.local_addr().expect("fake upstream address").port();
        let (tx, rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept the proxy");
            let mut conn = Conn::new(stream, Arc::new(AtomicBool::new(false))).expect("conn");
            let mut served = 0;
            while let Some(request) = read_request(&mut conn).expect("read a request") {
                let response = reply(served, &request);
                tx.send(request.into_bytes()).expect("send the request");
                conn.stream
                    .write_all(response.as_bytes())
                    .expect("write a response");
                served += 1;
            }
        });
        (port, rx, handle)
    }

    /// A fake upstream serving one connection, answering the n-th request (from 0) with
    /// `reply(n)`. Every request received is sent on the channel.
    fn fake_upstream_answering(
        reply: impl Fn(usize) -> String + Send + 'static,
    ) -> (u16, mpsc::Receiver<Vec<u8>>, JoinHandle<()>) {
        fake_upstream_replying(move |served, _| reply(served))
    }

    /// The answer of a fake Firehose to a `PutRecordBatch` request: one successful entry per
    /// record received, in order, with `RecordId` `id-<the record's Data>`.
    fn echo_records(_served: usize, request: &Message) -> String {
        let body: serde_json::Value =
            serde_json::from_slice(&request.body).expect("a JSON PutRecordBatch request");
        let entries: Vec<serde_json::Value> = body["Records"]
            .as_array()
            .expect("Records")
            .iter()
            .map(|record| {
                let data = record["Data"].as_str().expect("Data");
                serde_json::json!({ "RecordId": format!("id-{data}") })
            })
            .collect();
        let answer = serde_json::json!({
            "FailedPutCount": 0,
            "Encrypted": false,
            "RequestResponses": entries,
        })
        .to_string();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {JSON}\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        )
    }

    /// A fake upstream serving one connection: the first response has a `Content-Length`, the
    /// following ones are chunked. Every request received is sent on the channel.
    fn fake_upstream() -> (u16, mpsc::Receiver<Vec<u8>>, JoinHandle<()>) {
        fake_upstream_answering(|served| {
            if served == 0 {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {JSON}\r\nContent-Length: 11\r\n\r\n{{\"ok\":true}}"
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {JSON}\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5\r\n{{\"ok\"\r\n6\r\n:true}}\r\n0\r\n\r\n"
                )
            }
        })
    }

    /// A JSON-protocol request for the operation `target` (`Service_Version.Operation`).
    fn amz_json_request(target: &str, body: &str) -> Vec<u8> {
        format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {JSON}\r\n\
             X-Amz-Target: {target}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// A Kinesis request.
    fn request(operation: &str, body: &str) -> Vec<u8> {
        amz_json_request(&format!("Kinesis_20131202.{operation}"), body)
    }

    /// The body of a `PutRecordBatch` request for records with these `Data`, serialised as
    /// `serde_json` does (compact, keys in this order).
    fn put_record_batch_body(data: &[&str]) -> String {
        let records: Vec<String> = data
            .iter()
            .map(|data| format!(r#"{{"Data":"{data}"}}"#))
            .collect();
        format!(
            r#"{{"DeliveryStreamName":"d","Records":[{}]}}"#,
            records.join(",")
        )
    }

    /// A `PutRecordBatch` request for records with these `Data`.
    fn put_record_batch_of(data: &[&str]) -> Vec<u8> {
        amz_json_request(PUT_RECORD_BATCH, &put_record_batch_body(data))
    }

    /// A `PutRecordBatch` request for `records` records.
    fn put_record_batch(records: usize) -> Vec<u8> {
        put_record_batch_of(&vec!["YQ=="; records])
    }

    /// Sends `bytes` on the client connection and reads the response.
    fn round_trip(client: &mut Conn, bytes: &[u8]) -> Message {
        client.stream.write_all(bytes).expect("write to the proxy");
        client.deadline = Some(Instant::now() + Duration::from_secs(10));
        read_response(client)
            .expect("read from the proxy")
            .expect("a response from the proxy")
            .0
    }

    fn connect(proxy: &FaultProxy) -> Conn {
        let address = proxy.endpoint().trim_start_matches("http://").to_owned();
        let stream = TcpStream::connect(address).expect("connect to the proxy");
        Conn::new(stream, Arc::new(AtomicBool::new(false))).expect("client conn")
    }

    #[test]
    fn forwards_other_calls_and_injects_faults_into_get_records() {
        let (upstream_port, forwarded, upstream) = fake_upstream();
        let proxy = FaultProxy::start(
            upstream_port,
            Faults {
                throttle: 1.0,
                seed: 1,
                ..Faults::default()
            },
        );
        let mut client = connect(&proxy);

        let list = request("ListShards", r#"{"StreamName":"s"}"#);
        let response = round_trip(&mut client, &list);
        assert!(response.head.starts_with(b"HTTP/1.1 200 "));
        assert_eq!(response.body, br#"{"ok":true}"#);
        assert_eq!(forwarded.recv().expect("forwarded request"), list);

        // A chunked upstream response reaches the client with a Content-Length.
        let describe = request("DescribeStreamSummary", r#"{"StreamName":"s"}"#);
        let response = round_trip(&mut client, &describe);
        assert_eq!(response.body, br#"{"ok":true}"#);
        assert_eq!(response.header("content-length").as_deref(), Some("11"));
        assert_eq!(response.header("transfer-encoding"), None);
        assert_eq!(forwarded.recv().expect("forwarded request"), describe);

        let get = request("GetRecords", r#"{"ShardIterator":"abc"}"#);
        let response = round_trip(&mut client, &get);
        assert!(response.head.starts_with(b"HTTP/1.1 400 "));
        assert_eq!(response.header("content-type").as_deref(), Some(JSON));
        assert_eq!(
            response.header("x-amzn-errortype").as_deref(),
            Some("ProvisionedThroughputExceededException")
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON body");
        assert_eq!(body["__type"], "ProvisionedThroughputExceededException");
        assert_eq!(proxy.injected(), (1, 0));
        assert!(
            forwarded.try_recv().is_err(),
            "an injected fault must not reach the upstream"
        );

        drop(client);
        drop(proxy);
        upstream.join().expect("fake upstream");
    }

    #[test]
    fn injects_expired_iterators() {
        // Nothing is forwarded, so the upstream port is never used.
        let proxy = FaultProxy::start(
            1,
            Faults {
                expire: 1.0,
                seed: 2,
                ..Faults::default()
            },
        );
        let mut client = connect(&proxy);
        let response = round_trip(&mut client, &request("GetRecords", "{}"));
        assert!(response.head.starts_with(b"HTTP/1.1 400 "));
        let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON body");
        assert_eq!(body["__type"], "ExpiredIteratorException");
        assert_eq!(body["message"], "Iterator expired (injected)");
        assert_eq!(proxy.injected(), (0, 1));
    }

    #[test]
    fn draws_faults_with_the_given_probabilities() {
        let shared = Shared::new(
            1,
            Faults {
                throttle: 0.3,
                expire: 0.2,
                seed: 42,
                ..Faults::default()
            },
        );
        let draws: Vec<Option<Fault>> = (0..10_000).map(|_| shared.draw()).collect();
        let throttles = draws
            .iter()
            .filter(|d| **d == Some(Fault::Throttle))
            .count();
        let expiries = draws.iter().filter(|d| **d == Some(Fault::Expire)).count();
        assert!((2_700..3_300).contains(&throttles), "{throttles} throttles");
        assert!((1_700..2_300).contains(&expiries), "{expiries} expiries");
        assert_eq!(shared.throttles.load(Ordering::Relaxed), throttles as u64);
        assert_eq!(shared.expiries.load(Ordering::Relaxed), expiries as u64);
    }

    #[test]
    fn turns_put_record_batch_entries_into_failures() {
        const ANSWER: &str = r#"{"FailedPutCount":0,"Encrypted":false,"RequestResponses":[{"RecordId":"a"},{"RecordId":"b"}]}"#;
        let (upstream_port, forwarded, upstream) = fake_upstream_answering(|_| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {JSON}\r\nContent-Length: {}\r\n\r\n{ANSWER}",
                ANSWER.len()
            )
        });
        let proxy = FaultProxy::start(
            upstream_port,
            Faults {
                record_failure: 1.0,
                seed: 3,
                ..Faults::default()
            },
        );
        let mut client = connect(&proxy);

        let response = round_trip(&mut client, &put_record_batch(2));
        assert!(response.head.starts_with(b"HTTP/1.1 200 "));
        assert_eq!(response.header("content-type").as_deref(), Some(JSON));
        assert_eq!(
            response.content_length().expect("a valid Content-Length"),
            Some(response.body.len())
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON body");
        assert_eq!(body["FailedPutCount"], 2, "{body}");
        assert_eq!(body["Encrypted"], false, "{body}");
        let entries = body["RequestResponses"].as_array().expect("entries");
        assert_eq!(entries.len(), 2, "{body}");
        for entry in entries {
            assert_eq!(entry["ErrorCode"], "ServiceUnavailableException", "{body}");
            assert_eq!(entry["ErrorMessage"], "Slow down (injected)", "{body}");
            assert!(entry.get("RecordId").is_none(), "{body}");
        }
        let injected = proxy.firehose_injected();
        assert_eq!(injected.calls, 1);
        assert_eq!(injected.throttled_calls, 0);
        assert_eq!(injected.failed_calls, 0);
        assert_eq!(injected.failed_records, 2);
        assert_eq!(proxy.put_record_batch_sizes(), [2]);

        drop(client);
        drop(proxy);
        // The fake upstream waits for one connection: give it an empty one, so that it ends.
        drop(
            TcpStream::connect(("127.0.0.1", upstream_port)).expect("connect to the fake upstream"),
        );
        upstream.join().expect("fake upstream");
        assert!(
            forwarded.try_recv().is_err(),
            "nothing reaches the upstream when every record fails"
        );
    }

    #[test]
    fn forwards_the_records_that_do_not_fail_and_merges_the_answers() {
        // base64 of "A" to "H".
        const DATA: [&str; 8] = [
            "QQ==", "Qg==", "Qw==", "RA==", "RQ==", "Rg==", "Rw==", "SA==",
        ];
        let faults = Faults {
            record_failure: 0.5,
            seed: 3,
            ..Faults::default()
        };
        // The proxy's draws, replayed: one for the whole call, then one per record.
        let twin = Shared::new(1, faults);
        let _ = twin.uniform();
        let failing: Vec<bool> = DATA
            .iter()
            .map(|_| twin.uniform() < faults.record_failure)
            .collect();
        assert_eq!(
            failing,
            [false, false, true, true, false, true, false, true],
            "the draws of seed 3"
        );
        let kept: Vec<&str> = DATA
            .iter()
            .zip(&failing)
            .filter(|(_, failed)| !**failed)
            .map(|(data, _)| *data)
            .collect();

        let (upstream_port, forwarded, upstream) = fake_upstream_replying(echo_records);
        let proxy = FaultProxy::start(upstream_port, faults);
        let mut client = connect(&proxy);
        let response = round_trip(&mut client, &put_record_batch_of(&DATA));
        // Only the records that do not fail reach the upstream; every other byte of the request
        // is as sent, Content-Length aside.
        assert_eq!(
            String::from_utf8(forwarded.recv().expect("forwarded request")).expect("UTF-8"),
            String::from_utf8(put_record_batch_of(&kept)).expect("UTF-8"),
        );
        assert!(response.head.starts_with(b"HTTP/1.1 200 "));
        assert_eq!(response.header("content-type").as_deref(), Some(JSON));
        assert_eq!(
            response.content_length().expect("a valid Content-Length"),
            Some(response.body.len())
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON body");
        assert_eq!(body["FailedPutCount"], 4, "{body}");
        assert_eq!(body["Encrypted"], false, "{body}");
        let entries = body["RequestResponses"].as_array().expect("entries");
        assert_eq!(entries.len(), DATA.len(), "{body}");
        for ((entry, data), failed) in entries.iter().zip(DATA).zip(&failing) {
            if *failed {
                assert_eq!(entry["ErrorCode"], "ServiceUnavailableException", "{body}");
                assert_eq!(entry["ErrorMessage"], "Slow down (injected)", "{body}");
                assert!(entry.get("RecordId").is_none(), "{body}");
            } else {
                assert_eq!(entry["RecordId"], format!("id-{data}"), "{body}");
                assert!(entry.get("ErrorCode").is_none(), "{body}");
            }
        }
        let injected = proxy.firehose_injected();
        assert_eq!((injected.calls, injected.failed_records), (1, 4));
        assert_eq!((injected.throttled_calls, injected.failed_calls), (0, 0));
        assert_eq!(proxy.put_record_batch_sizes(), [DATA.len()]);
        drop(client);
        drop(proxy);
        upstream.join().expect("fake upstream");

        // No record fails: the request and the answer pass unchanged.
        let (upstream_port, forwarded, upstream) = fake_upstream_replying(echo_records);
        let proxy = FaultProxy::start(
            upstream_port,
            Faults {
                record_failure: 0.0,
                seed: 3,
                ..Faults::default()
            },
        );
        let mut client = connect(&proxy);
        let batch = put_record_batch_of(&DATA);
        let response = round_trip(&mut client, &batch);
        assert_eq!(forwarded.recv().expect("forwarded request"), batch);
        let answer = echo_records(
            0,
            &Message {
                head: Vec::new(),
                body: put_record_batch_body(&DATA).into_bytes(),
            },
        );
        assert_eq!(
            String::from_utf8(response.into_bytes()).expect("UTF-8"),
            answer
        );
        let injected = proxy.firehose_injected();
        assert_eq!((injected.calls, injected.failed_records), (1, 0));
        assert_eq!(proxy.put_record_batch_sizes(), [DATA.len()]);
        drop(client);
        drop(proxy);
        upstream.join().expect("fake upstream");
    }

    #[test]
    fn answers_put_record_batch_with_injected_errors() {
        // Nothing is forwarded, so the upstream port is never used.
        let throttling = FaultProxy::start(
            1,
            Faults {
                batch_throttle: 1.0,
                seed: 4,
                ..Faults::default()
            },
        );
        let mut client = connect(&throttling);
        let response = round_trip(&mut client, &put_record_batch(3));
        assert!(response.head.starts_with(b"HTTP/1.1 503 "));
        assert_eq!(response.header("content-type").as_deref(), Some(JSON));
        assert_eq!(
            response.header("x-amzn-errortype").as_deref(),
            Some("ServiceUnavailableException")
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON body");
        assert_eq!(body["__type"], "ServiceUnavailableException");
        assert_eq!(body["message"], "Slow down (injected)");
        // A second call, with no records.
        let response = round_trip(&mut client, &put_record_batch(0));
        assert!(response.head.starts_with(b"HTTP/1.1 503 "));
        let injected = throttling.firehose_injected();
        assert_eq!(injected.calls, 2);
        assert_eq!(injected.throttled_calls, 2);
        assert_eq!(injected.failed_calls, 0);
        assert_eq!(injected.failed_records, 0);
        assert_eq!(throttling.put_record_batch_sizes(), [3, 0]);

        let failing = FaultProxy::start(
            1,
            Faults {
                batch_error: 1.0,
                seed: 5,
                ..Faults::default()
            },
        );
        let mut client = connect(&failing);
        let response = round_trip(&mut client, &put_record_batch(1));
        assert!(response.head.starts_with(b"HTTP/1.1 500 "));
        assert_eq!(
            response.header("x-amzn-errortype").as_deref(),
            Some("InternalFailure")
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON body");
        assert_eq!(body["__type"], "InternalFailure");
        assert_eq!(body["message"], "Internal failure (injected)");
        let injected = failing.firehose_injected();
        assert_eq!((injected.calls, injected.throttled_calls), (1, 0));
        assert_eq!((injected.failed_calls, injected.failed_records), (1, 0));
        assert_eq!(failing.put_record_batch_sizes(), [1]);
    }
}
