//! Plaintext data keys and the plaintext of what is encrypted never reach the logs: envelope
//! round trips, a pipeline writing an encrypting file sink, and KMS data keys through moto, all
//! logged at TRACE (events, spans and `log` records) into a buffer that is then searched for every
//! data key (raw, hexadecimal, base64, `Debug` of its bytes) and for a marker in the payload. The
//! `Debug` forms of the types that hold keys are searched too.
//!
//! Alone in its test binary, so that the subscriber is the process's global one and sees the events
//! of every thread (runtime workers, blocking threads of file I/O, the SDK's connections).

use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use rivulet::crypto::{
    DataKey, DataKeyLimits, EncryptionContext, EnvelopeDecryptor, EnvelopeEncryptor, EnvelopeError,
    KeyProvider, KmsKeyProvider, Zeroizing, CONTEXT_PIPELINE, CONTEXT_STREAM,
};
use rivulet::{Error, FileSink, FileSource, MemorySink, Pipeline, Result};

#[allow(dead_code, unreachable_pub)]
#[path = "integration/support/moto.rs"]
mod moto;

/// Everything logged in the process, as the fmt subscriber writes it.
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl LogCapture {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// The capture, installed once as the global subscriber at TRACE (with `log` records).
fn logs() -> &'static LogCapture {
    static LOGS: OnceLock<LogCapture> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::util::SubscriberInitExt as _;
        let capture = LogCapture::default();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_ansi(false)
            .with_writer(capture.clone())
            .finish()
            .try_init()
            .expect("no other subscriber in this process");
        capture
    })
}

/// Logs a line from a runtime worker and from a blocking thread, to check that the capture sees
/// both.
async fn log_capture_check(name: &str) {
    tracing::trace!("capture check {name}: worker");
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || tracing::trace!("capture check {name}: blocking thread"))
        .await
        .unwrap();
}

/// A provider that remembers every plaintext data key `inner` hands out, for the test to look
/// for. Its `Debug` form shows the inner provider and how many keys, never the keys.
struct Recording<P> {
    inner: P,
    plaintexts: Mutex<Vec<Vec<u8>>>,
}

impl<P> Recording<P> {
    fn new(inner: P) -> Self {
        Self {
            inner,
            plaintexts: Mutex::new(Vec::new()),
        }
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        self.plaintexts.lock().unwrap().clone()
    }
}

impl<P: std::fmt::Debug> std::fmt::Debug for Recording<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("inner", &self.inner)
            .field("keys", &self.plaintexts.lock().unwrap().len())
            .finish()
    }
}

#[async_trait]
impl<P: KeyProvider> KeyProvider for Recording<P> {
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
        let key = self.inner.generate_data_key(context).await?;
        self.plaintexts.lock().unwrap().push(key.plaintext.to_vec());
        Ok(key)
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        encrypted: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let key = self
            .inner
            .decrypt_data_key(key_id, encrypted, context)
            .await?;
        self.plaintexts.lock().unwrap().push(key.to_vec());
        Ok(key)
    }
}

/// Random data keys, "encrypted" by a XOR with a random mask and tagged with their context, so
/// that another context is refused as KMS refuses it.
#[derive(Debug)]
struct StandIn {
    mask: [u8; 32],
}

const STAND_IN_KEY: &str = "arn:aws:kms:us-east-1:000000000000:key/stand-in";

impl StandIn {
    fn new() -> Self {
        let mut mask = [0u8; 32];
        aws_lc_rs::rand::fill(&mut mask).unwrap();
        Self { mask }
    }
}

#[async_trait]
impl KeyProvider for StandIn {
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
        let mut plaintext = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut plaintext[..]).unwrap();
        let mut encrypted: Vec<u8> = plaintext
            .iter()
            .zip(self.mask)
            .map(|(k, m)| k ^ m)
            .collect();
        encrypted.extend_from_slice(format!("{context:?}").as_bytes());
        Ok(DataKey {
            key_id: STAND_IN_KEY.into(),
            plaintext,
            encrypted,
        })
    }

    async fn decrypt_data_key(
        &self,
        _key_id: &str,
        encrypted: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>> {
        if encrypted.len() < 32 || encrypted[32..] != *format!("{context:?}").as_bytes() {
            return Err(Error::Envelope(EnvelopeError::Kms {
                operation: "Decrypt",
                code: "InvalidCiphertextException".into(),
                message: "another context".into(),
            }));
        }
        Ok(Zeroizing::new(
            encrypted[..32]
                .iter()
                .zip(self.mask)
                .map(|(k, m)| k ^ m)
                .collect(),
        ))
    }
}

/// The forms a data key takes when printed: hexadecimal, base64, `Debug` of its bytes.
fn printed_forms(key: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        hex.to_uppercase(),
        hex,
        base64::engine::general_purpose::STANDARD.encode(key),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        format!("{key:?}"),
        format!("{:x?}", key),
    ]
}

/// A payload line carrying `marker`.
fn line(i: usize, marker: &str) -> String {
    format!("{{\"n\":{i},\"secret\":\"{marker}\"}}\n")
}

/// Asserts that the captured logs hold the capture checks of `name` (so the capture worked) and
/// none of `keys` nor `marker`, and that `debug_forms` hold none of `keys`.
fn assert_no_leak(name: &str, keys: &[Vec<u8>], marker: &str, debug_forms: &[String]) {
    let captured = logs().bytes();
    let text = String::from_utf8_lossy(&captured);
    for check in ["worker", "blocking thread"] {
        assert!(
            text.contains(&format!("capture check {name}: {check}")),
            "the capture holds what was logged: {text}"
        );
    }
    for key in keys {
        assert_eq!(key.len(), 32);
        assert!(
            memchr::memmem::find(&captured, key).is_none(),
            "a data key's raw bytes are in the logs"
        );
        for form in printed_forms(key) {
            assert!(
                !text.contains(&form),
                "a data key ({form}) is in the logs:\n{text}"
            );
            for debug in debug_forms {
                assert!(!debug.contains(&form), "a data key ({form}) is in {debug}");
            }
        }
    }
    let bytes: Vec<String> = marker.bytes().map(|b| b.to_string()).collect();
    let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
    for form in [marker.to_owned(), bytes.join(", "), hex] {
        assert!(
            !text.contains(&form),
            "the payload ({form}) is in the logs:\n{text}"
        );
    }
}

/// Envelopes sealed under several data keys and opened again, a tampered one refused, and a
/// pipeline whose file sink seals what it writes: no key and no payload in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_key_or_payload_reaches_the_logs() {
    const MARKER: &str = "rivulet-plaintext-marker-7f3c9e";
    logs();
    log_capture_check("stand-in").await;
    let keys = Arc::new(Recording::new(StandIn::new()));
    let provider = Arc::clone(&keys) as Arc<dyn KeyProvider>;

    let mut enc = EnvelopeEncryptor::builder(Arc::clone(&provider))
        .with_context(CONTEXT_STREAM, "out")
        .with_limits(DataKeyLimits {
            max_messages: 2,
            ..DataKeyLimits::default()
        })
        .build()
        .unwrap();
    let messages: Vec<Vec<u8>> = (0..5).map(|i| line(i, MARKER).into_bytes()).collect();
    let mut sealed = Vec::new();
    for m in &messages {
        enc.seal(m, &mut sealed).await.unwrap();
    }
    assert_eq!(enc.keys_generated(), 3, "5 messages, 2 per data key");
    assert!(memchr::memmem::find(&sealed, MARKER.as_bytes()).is_none());
    let mut dec =
        EnvelopeDecryptor::new(Arc::clone(&provider)).expect_context(CONTEXT_STREAM, "out");
    assert_eq!(dec.open_all(&sealed).await.unwrap(), messages.concat());
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let err = EnvelopeDecryptor::new(Arc::clone(&provider))
        .open_all(&tampered)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");

    // JSON lines carrying the marker → SQL → a file sink sealing each write.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(
        &input,
        (0..100).map(|i| line(i, MARKER)).collect::<String>(),
    )
    .unwrap();
    let output = dir.path().join("out.ndjson");
    let report = Pipeline::builder()
        .source(FileSource::builder(&input).build().unwrap())
        .sql("SELECT n, secret FROM source")
        .sink(
            FileSink::builder(&output)
                .with_encryption(enc.derive(CONTEXT_PIPELINE, "leaks").unwrap())
                .build()
                .unwrap(),
        )
        .error_output(MemorySink::new())
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.metrics.rows_out, 100);
    let stored = std::fs::read(&output).unwrap();
    assert!(memchr::memmem::find(&stored, MARKER.as_bytes()).is_none());
    let opened = EnvelopeDecryptor::new(Arc::clone(&provider))
        .expect_context(CONTEXT_PIPELINE, "leaks")
        .open_all(&stored)
        .await
        .unwrap();
    let opened = String::from_utf8(opened).unwrap();
    assert_eq!(opened.lines().count(), 100);
    assert!(opened.lines().all(|l| l.contains(MARKER)), "{opened}");

    let data_key = provider.generate_data_key(enc.context()).await.unwrap();
    let debug_forms = vec![
        format!("{data_key:?}"),
        format!("{enc:?}"),
        format!("{dec:?}"),
        format!("{provider:?}"),
    ];
    let generated = keys.keys();
    assert!(
        generated.len() >= 6,
        "the round trip's keys, the sink's, the one shown: {}",
        generated.len()
    );
    assert_no_leak("stand-in", &generated, MARKER, &debug_forms);
}

/// The same through KMS (moto): the data keys `GenerateDataKey` and `Decrypt` return, in the
/// provider, the envelope round trip and the SDK's own TRACE logs of those calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_data_keys_never_reach_the_logs() {
    const MARKER: &str = "rivulet-kms-plaintext-marker-41d8a2";
    let Some(moto) = moto::MotoServer::start() else {
        return;
    };
    logs();
    log_capture_check("kms").await;
    let conf = aws_config::SdkConfig::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_kms::config::SharedCredentialsProvider::new(
            aws_sdk_kms::config::Credentials::new("test", "test", None, None, "tests"),
        ))
        .build();
    let client = aws_sdk_kms::Client::new(&conf);
    let key = client.create_key().send().await.unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_owned();
    let kms = KmsKeyProvider::with_client(client, &key_arn);
    let keys = Arc::new(Recording::new(kms.clone()));
    let provider = Arc::clone(&keys) as Arc<dyn KeyProvider>;

    let mut context = EncryptionContext::new();
    context.insert(CONTEXT_STREAM.into(), "out".into());
    let data_key = provider.generate_data_key(&context).await.unwrap();
    let decrypted = provider
        .decrypt_data_key(&data_key.key_id, &data_key.encrypted, &context)
        .await
        .unwrap();
    assert_eq!(&decrypted[..], &data_key.plaintext[..]);

    let mut enc = EnvelopeEncryptor::builder(Arc::clone(&provider))
        .with_context(CONTEXT_STREAM, "out")
        .build()
        .unwrap();
    let messages: Vec<Vec<u8>> = (0..3).map(|i| line(i, MARKER).into_bytes()).collect();
    let mut sealed = Vec::new();
    for m in &messages {
        enc.seal(m, &mut sealed).await.unwrap();
    }
    let mut dec = EnvelopeDecryptor::new(Arc::clone(&provider)).expect_key(&key_arn);
    assert_eq!(dec.open_all(&sealed).await.unwrap(), messages.concat());

    let text = String::from_utf8_lossy(&logs().bytes()).into_owned();
    assert!(
        text.contains("aws_smithy_runtime"),
        "the SDK's own events are captured: {text}"
    );
    let debug_forms = vec![
        format!("{data_key:?}"),
        format!("{decrypted:?}"),
        format!("{kms:?}"),
        format!("{enc:?}"),
        format!("{dec:?}"),
    ];
    let generated = keys.keys();
    assert_eq!(
        generated.len(),
        4,
        "two data keys, each generated and decrypted"
    );
    assert_no_leak("kms", &generated, MARKER, &debug_forms);
}
