//! Client-side envelope encryption with AWS KMS.
//!
//! An [`EnvelopeEncryptor`] asks KMS for a data key (`GenerateDataKey`, AES-256) under an
//! [`EncryptionContext`] that names the pipeline and the stream, encrypts messages with it
//! (AES-256-GCM, aws-lc-rs), and writes each as a self-describing envelope: the key's ARN, the
//! context, the data key as KMS encrypted it, the nonce, the ciphertext and the tag (format in
//! `src/crypto/envelope.rs` and the README). Data keys are cached and replaced after a bounded
//! age, number of bytes or number of messages ([`DataKeyLimits`]).
//!
//! An [`EnvelopeDecryptor`] reads envelopes back: it checks the context it was told to expect, has
//! KMS decrypt the data key (`Decrypt`, which refuses a different context or key), and
//! authenticates the ciphertext. `rivulet decrypt` is the same on the command line.
//!
//! Sinks take an encryptor through their builders (`with_encryption`) or the `encryption` table of
//! a sink in the pipeline file: a record sink (Firehose, Kinesis) seals each record, a file sink each
//! chunk it writes, the S3 sink each object.

pub(crate) mod envelope;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

pub use envelope::EncryptionContext;
use envelope::{NONCE_LEN, TAG_LEN};
/// Plaintext data keys are held in it ([`DataKey::plaintext`], [`KeyProvider::decrypt_data_key`]):
/// zeroed when dropped.
pub use zeroize::Zeroizing;

pub use crate::error::EnvelopeError;
use crate::{Error, Result};

/// Context key naming the pipeline.
pub const CONTEXT_PIPELINE: &str = "rivulet:pipeline";
/// Context key naming the output stream (or `raw_data`, `error_stream`).
pub const CONTEXT_STREAM: &str = "rivulet:stream";

/// A data key: the plaintext for this process only, and the same key as KMS encrypted it, to
/// store next to the data. The plaintext is zeroed when the key is dropped, and its `Debug` form
/// never shows it.
pub struct DataKey {
    /// ARN of the KMS key that encrypted it.
    pub key_id: String,
    /// 32 bytes of key, zeroed on drop.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The encrypted data key (opaque to rivulet).
    pub encrypted: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("plaintext", &"<redacted>")
            .field("encrypted_len", &self.encrypted.len())
            .finish()
    }
}

/// Where data keys come from: KMS ([`KmsKeyProvider`]), or a stand-in in tests.
#[async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// A new AES-256 data key under `context` (KMS `GenerateDataKey`).
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey>;

    /// The plaintext of `encrypted` (KMS `Decrypt`), zeroed when dropped; `key_id` is the key the
    /// envelope names (or the one required), which KMS checks.
    async fn decrypt_data_key(
        &self,
        key_id: &str,
        encrypted: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>>;
}

/// Data keys from AWS KMS.
///
/// A call that fails in a way that may pass (`ThrottlingException`, `KMSInternalException`,
/// `DependencyTimeoutException`, `KeyUnavailableException`, a server error, a network failure or
/// timeout, credentials that could not be loaded) is retried with a jittered exponential back-off
/// from 100 ms to 5 s, up to [`KmsKeyProvider::DEFAULT_MAX_ATTEMPTS`] attempts in all (about 20 s);
/// any other failure (access denied, a disabled or unknown key, a wrong context) fails at once.
#[derive(Debug, Clone)]
pub struct KmsKeyProvider {
    client: aws_sdk_kms::Client,
    key_id: String,
    max_attempts: u32,
}

/// First and longest wait between two attempts of a KMS call.
const KMS_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// KMS error codes worth another attempt.
const KMS_RETRYABLE: &[&str] = &[
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

impl KmsKeyProvider {
    /// A provider for `key_id` (key id, key ARN, alias name or alias ARN) with a client configured
    /// from the default chain, `region` and `endpoint_url` overriding it.
    pub async fn new(
        key_id: impl Into<String>,
        region: Option<String>,
        endpoint_url: Option<String>,
    ) -> Result<Self> {
        let shared = crate::aws::load_config(region, endpoint_url, "encryption").await?;
        Ok(Self::with_client(
            crate::aws::sdk_client!(aws_sdk_kms, shared),
            key_id,
        ))
    }

    /// Attempts a KMS call gets by default before its failure is returned.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

    /// A provider using a client the caller configured.
    pub fn with_client(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Sets the attempts a call gets (at least 1; 1 does not retry).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Runs `call` until it succeeds, fails in a way retrying cannot help, or has had its
    /// attempts.
    async fn retried<T, E, F, Fut>(&self, operation: &'static str, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, aws_sdk_kms::error::SdkError<E>>>,
        E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut backoff = crate::aws::Backoff::new(KMS_BACKOFF.0, KMS_BACKOFF.1);
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.max_attempts && kms_retryable(&e) => {
                    let wait = backoff.next();
                    tracing::warn!(
                        operation,
                        attempt,
                        "KMS call failed, retrying in {wait:?}: {}",
                        kms_error(operation, e)
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(match kms_error(operation, e) {
                        Error::Envelope(EnvelopeError::Kms {
                            operation,
                            code,
                            message,
                        }) if attempt > 1 => Error::Envelope(EnvelopeError::Kms {
                            operation,
                            code,
                            message: format!("{message} (after {attempt} attempts)"),
                        }),
                        other => other,
                    })
                }
            }
        }
    }

    /// The key the provider generates data keys under, as given.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

/// Whether a failed KMS call may succeed when tried again.
fn kms_retryable<E>(e: &aws_sdk_kms::error::SdkError<E>) -> bool
where
    E: aws_sdk_kms::error::ProvideErrorMetadata,
{
    use aws_sdk_kms::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or_default();
            KMS_RETRYABLE.contains(&code) || s.raw().status().is_server_error()
        }
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(d) => !d.is_user(),
        _ => true,
    }
}

fn kms_error<E>(operation: &'static str, e: aws_sdk_kms::error::SdkError<E>) -> Error
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let (code, message) = match e.as_service_error() {
        Some(s) => (
            s.code().unwrap_or("Unknown").to_owned(),
            s.message().unwrap_or_default().to_owned(),
        ),
        None => ("RequestFailed".to_owned(), error_chain(&e)),
    };
    Error::Envelope(EnvelopeError::Kms {
        operation,
        code,
        message,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn sdk_context(context: &EncryptionContext) -> Option<HashMap<String, String>> {
    (!context.is_empty()).then(|| context.clone().into_iter().collect())
}

#[async_trait]
impl KeyProvider for KmsKeyProvider {
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
        let mut out = self
            .retried("GenerateDataKey", || {
                self.client
                    .generate_data_key()
                    .key_id(&self.key_id)
                    .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                    .set_encryption_context(sdk_context(context))
                    .send()
            })
            .await?;
        let missing = |what: &str| {
            Error::Envelope(EnvelopeError::Kms {
                operation: "GenerateDataKey",
                code: "InvalidResponse".into(),
                message: format!("the response has no {what}"),
            })
        };
        // The plaintext is moved out of the response, not copied, so that the one copy is zeroed.
        let plaintext = Zeroizing::new(
            out.plaintext
                .take()
                .ok_or_else(|| missing("Plaintext"))?
                .into_inner(),
        );
        Ok(DataKey {
            key_id: out.key_id().ok_or_else(|| missing("KeyId"))?.to_owned(),
            plaintext,
            encrypted: out
                .ciphertext_blob()
                .ok_or_else(|| missing("CiphertextBlob"))?
                .as_ref()
                .to_vec(),
        })
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        encrypted: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = self
            .retried("Decrypt", || {
                self.client
                    .decrypt()
                    .key_id(key_id)
                    .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(encrypted))
                    .set_encryption_context(sdk_context(context))
                    .send()
            })
            .await?;
        out.plaintext
            .take()
            .map(|p| Zeroizing::new(p.into_inner()))
            .ok_or_else(|| {
                Error::Envelope(EnvelopeError::Kms {
                    operation: "Decrypt",
                    code: "InvalidResponse".into(),
                    message: "the response has no Plaintext".into(),
                })
            })
    }
}

/// When a cached data key is replaced by a new one.
///
/// Fewer messages and bytes per key limit what one leaked data key exposes, at the cost of more
/// KMS calls. The defaults make one `GenerateDataKey` call per five minutes for most pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataKeyLimits {
    /// Longest time a data key is used. Default 5 minutes.
    pub max_age: Duration,
    /// Most plaintext bytes encrypted under one data key. Default 1 GiB.
    pub max_bytes: u64,
    /// Most messages (envelopes) under one data key. Default 2^20; at most 2^32, the bound NIST
    /// SP 800-38D sets for one GCM key.
    pub max_messages: u64,
}

impl Default for DataKeyLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(300),
            max_bytes: 1 << 30,
            max_messages: 1 << 20,
        }
    }
}

struct CachedKey {
    key: LessSafeKey,
    key_id: String,
    encrypted: Vec<u8>,
    created: Instant,
    bytes: u64,
    messages: u64,
    /// The fixed field of this key's nonces (random per data key); the rest is `messages`.
    nonce_prefix: [u8; 4],
}

/// Encrypts messages into envelopes with KMS data keys.
pub struct EnvelopeEncryptor {
    provider: Arc<dyn KeyProvider>,
    context: EncryptionContext,
    context_bytes: Vec<u8>,
    limits: DataKeyLimits,
    current: Option<CachedKey>,
    keys_generated: u64,
}

impl fmt::Debug for EnvelopeEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopeEncryptor")
            .field("provider", &self.provider)
            .field("context", &self.context)
            .field("limits", &self.limits)
            .field("keys_generated", &self.keys_generated)
            .finish_non_exhaustive()
    }
}

/// A clone has the same settings and a data-key cache of its own.
impl Clone for EnvelopeEncryptor {
    fn clone(&self) -> Self {
        Self {
            provider: Arc::clone(&self.provider),
            context: self.context.clone(),
            context_bytes: self.context_bytes.clone(),
            limits: self.limits,
            current: None,
            keys_generated: 0,
        }
    }
}

/// Seals each record into its own envelope, when an encryptor is set.
pub(crate) async fn seal_records(
    encryptor: &mut Option<EnvelopeEncryptor>,
    records: Vec<bytes::Bytes>,
) -> Result<Vec<bytes::Bytes>> {
    let Some(enc) = encryptor else {
        return Ok(records);
    };
    let mut out = Vec::with_capacity(records.len());
    for r in &records {
        let mut env = Vec::with_capacity(r.len() + enc.overhead().unwrap_or(320));
        enc.seal(r, &mut env).await?;
        out.push(bytes::Bytes::from(env));
    }
    Ok(out)
}

/// Cuts an envelope left incomplete at the end of the file at `path` (a write interrupted by a
/// crash: never acknowledged, so written again after the restart), so that what is appended next
/// stays readable. A file that does not exist or is empty is left alone.
///
/// Only a torn tail is cut: the last envelope, running past the end of the file, with no complete
/// envelope after its start. Anything else (data that is not envelopes, or an envelope whose
/// declared length runs past the end while complete envelopes follow it, as a damaged length
/// field does) is refused, naming the offset, and the file is left as it is. The file is read
/// header by header (seeking over the ciphertexts), never whole.
pub(crate) async fn truncate_torn_envelope(path: &std::path::Path) -> Result<()> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || cut_torn_tail(&owned))
        .await
        .map_err(|e| Error::Pipeline(format!("checking {}: {e}", path.display())))?
}

fn cut_torn_tail(path: &std::path::Path) -> Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", path.display()), e);
    let refuse = |why: String| {
        Error::sink(
            path.display().to_string(),
            format!("{why}; encrypted output is not appended to it: move it aside or repair it"),
        )
    };
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("opening", e)),
    };
    let len = file.metadata().map_err(|e| io("reading", e))?.len();
    // Reads up to `buf.len()` bytes at `at` (fewer at the end of the file).
    let read_at = |file: &mut std::fs::File, at: u64, buf: &mut [u8]| -> Result<usize> {
        file.seek(SeekFrom::Start(at))
            .map_err(|e| io("reading", e))?;
        let mut n = 0;
        while n < buf.len() {
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("reading", e)),
            }
        }
        Ok(n)
    };
    let mut head = vec![0u8; envelope::MAX_HEADER_LEN];
    let mut at = 0u64;
    let torn = loop {
        if at >= len {
            return Ok(());
        }
        let n = read_at(&mut file, at, &mut head)?;
        match envelope::declared_len(&head[..n]) {
            Ok(total) if at + total as u64 <= len => at += total as u64,
            Ok(total) => break format!("declares {total} bytes"),
            Err(EnvelopeError::Truncated { field, .. }) => break format!("ends in its {field}"),
            Err(e) => {
                return Err(refuse(format!(
                    "it holds data that is not envelopes at byte {at} ({e})"
                )))
            }
        }
    };
    // A torn tail holds no complete envelope after its start; a damaged length field does.
    let mut window = vec![0u8; 1 << 20];
    let marker = [
        envelope::MAGIC[0],
        envelope::MAGIC[1],
        envelope::MAGIC[2],
        envelope::VERSION,
    ];
    let mut from = at + 1;
    while from < len {
        let n = read_at(&mut file, from, &mut window)?;
        let mut found = None;
        for i in memchr::memmem::find_iter(&window[..n], &marker) {
            let q = from + i as u64;
            let k = read_at(&mut file, q, &mut head)?;
            if matches!(envelope::declared_len(&head[..k]), Ok(t) if q + t as u64 <= len) {
                found = Some(q);
                break;
            }
        }
        if let Some(q) = found {
            return Err(refuse(format!(
                "the envelope at byte {at} runs past the end of the file ({torn}, {} remain), \
                 yet a complete envelope starts at byte {q}: the file is damaged at byte {at}, \
                 not cut short by an interrupted write",
                len - at
            )));
        }
        if n < window.len() {
            break;
        }
        // Overlap by the marker's length less one, so a marker across two windows is found.
        from += (n - (marker.len() - 1)) as u64;
    }
    tracing::warn!(
        path = %path.display(),
        "cutting {} bytes at byte {at}: the last envelope was left incomplete by an interrupted \
         write ({torn})",
        len - at
    );
    file.set_len(at).map_err(|e| io("truncating", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    Ok(())
}

/// Builds an [`EnvelopeEncryptor`].
#[derive(Debug)]
pub struct EnvelopeEncryptorBuilder {
    provider: Arc<dyn KeyProvider>,
    context: EncryptionContext,
    limits: DataKeyLimits,
}

impl EnvelopeEncryptorBuilder {
    /// Adds a pair to the encryption context (sinks add `rivulet:stream`; the pipeline file adds
    /// `rivulet:pipeline`).
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// Sets when data keys are replaced.
    pub fn with_limits(mut self, limits: DataKeyLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Checks the settings and builds the encryptor. No KMS call is made until the first message.
    pub fn build(self) -> Result<EnvelopeEncryptor> {
        let l = self.limits;
        if l.max_age.is_zero() || l.max_bytes == 0 || l.max_messages == 0 {
            return Err(Error::config(
                "encryption",
                "data key limits must be above zero",
            ));
        }
        if l.max_messages > 1 << 32 {
            return Err(Error::config(
                "encryption.max_messages_per_key",
                "at most 2^32 messages per data key (NIST SP 800-38D's bound for one GCM key)",
            ));
        }
        let context_bytes = envelope::encode_context(&self.context).map_err(Error::Envelope)?;
        Ok(EnvelopeEncryptor {
            provider: self.provider,
            context: self.context,
            context_bytes,
            limits: self.limits,
            current: None,
            keys_generated: 0,
        })
    }
}

/// The largest message one envelope holds.
pub const MAX_MESSAGE_BYTES: usize = u32::MAX as usize;

/// Bytes an envelope adds to its message, for a given key id and encrypted-key length and context.
fn overhead(key_id: usize, context: usize, encrypted: usize) -> usize {
    4 + 2 + key_id + 2 + context + 2 + encrypted + NONCE_LEN + 4 + TAG_LEN
}

impl EnvelopeEncryptor {
    /// An encryptor taking data keys from `provider`.
    pub fn builder(provider: Arc<dyn KeyProvider>) -> EnvelopeEncryptorBuilder {
        EnvelopeEncryptorBuilder {
            provider,
            context: EncryptionContext::new(),
            limits: DataKeyLimits::default(),
        }
    }

    /// The encryption context every envelope carries.
    pub fn context(&self) -> &EncryptionContext {
        &self.context
    }

    /// A copy of this encryptor's settings with one more context pair and its own key cache (each
    /// sink, or each stream of one, gets its own).
    pub fn derive(&self, key: &str, value: &str) -> Result<Self> {
        let mut context = self.context.clone();
        context.insert(key.to_owned(), value.to_owned());
        EnvelopeEncryptorBuilder {
            provider: Arc::clone(&self.provider),
            context,
            limits: self.limits,
        }
        .build()
    }

    /// Number of data keys asked from the provider so far.
    pub fn keys_generated(&self) -> u64 {
        self.keys_generated
    }

    /// An upper bound of the bytes an envelope adds to a message, once a data key is in use
    /// (`None` before the first message).
    pub fn overhead(&self) -> Option<usize> {
        self.current
            .as_ref()
            .map(|k| overhead(k.key_id.len(), self.context_bytes.len(), k.encrypted.len()))
    }

    /// Makes sure the cached data key may encrypt `messages` more messages of `bytes` in total,
    /// asking for a new one when it may not.
    async fn reserve(&mut self, messages: u64, bytes: u64) -> Result<()> {
        let l = self.limits;
        let usable = self.current.as_ref().is_some_and(|k| {
            k.created.elapsed() < l.max_age
                && k.messages + messages <= l.max_messages
                && k.bytes + bytes <= l.max_bytes
        });
        if usable {
            return Ok(());
        }
        self.current = None;
        let dk = self.provider.generate_data_key(&self.context).await?;
        if dk.key_id.len() > u16::MAX as usize || dk.encrypted.len() > u16::MAX as usize {
            return Err(Error::Envelope(EnvelopeError::Invalid(
                "the data key or key id from KMS is over 64 KiB".into(),
            )));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, &dk.plaintext).map_err(|_| {
            Error::Envelope(EnvelopeError::Invalid(format!(
                "the data key is {} bytes, not 32",
                dk.plaintext.len()
            )))
        })?;
        self.keys_generated += 1;
        let mut nonce_prefix = [0u8; 4];
        aws_lc_rs::rand::fill(&mut nonce_prefix).expect("the system random generator works");
        self.current = Some(CachedKey {
            key: LessSafeKey::new(unbound),
            key_id: dk.key_id.clone(),
            encrypted: dk.encrypted.clone(),
            created: Instant::now(),
            bytes: 0,
            messages: 0,
            nonce_prefix,
        });
        Ok(())
    }

    /// Encrypts `message` into one envelope appended to `out`.
    pub async fn seal(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<()> {
        check_size(message.len())?;
        // A message larger than the byte limit gets a key of its own.
        let bytes = (message.len() as u64).min(self.limits.max_bytes);
        self.reserve(1, bytes).await?;
        self.seal_reserved(message, out);
        Ok(())
    }

    fn seal_reserved(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let k = self.current.as_mut().expect("a data key is reserved");
        // The deterministic construction of NIST SP 800-38D (8.2.1): a fixed field chosen at
        // random per data key, then the message counter. A data key is used by this encryptor
        // alone (clones and derived encryptors generate their own), so no nonce repeats under a
        // key, and no random number is drawn per message.
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&k.nonce_prefix);
        nonce[4..].copy_from_slice(&k.messages.to_be_bytes());
        k.messages += 1;
        k.bytes += message.len() as u64;
        let start = out.len();
        envelope::write_header(
            out,
            &k.key_id,
            &self.context_bytes,
            &k.encrypted,
            &nonce,
            message.len() as u32,
        );
        let body = out.len();
        out.extend_from_slice(message);
        let (header, ciphertext) = out[start..].split_at_mut(body - start);
        let tag = k
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&*header),
                ciphertext,
            )
            .expect("AES-GCM sealing of a message under 4 GiB cannot fail");
        out.extend_from_slice(tag.as_ref());
    }
}

fn check_size(len: usize) -> Result<()> {
    if len > MAX_MESSAGE_BYTES {
        return Err(Error::Envelope(EnvelopeError::Invalid(format!(
            "a message of {len} bytes is over the envelope limit of 4 GiB"
        ))));
    }
    Ok(())
}

/// Most data keys an [`EnvelopeDecryptor`] keeps decrypted.
const DECRYPTED_KEYS_CACHED: usize = 256;

/// Opens envelopes made by an [`EnvelopeEncryptor`].
pub struct EnvelopeDecryptor {
    provider: Arc<dyn KeyProvider>,
    expected_context: EncryptionContext,
    expected_key: Option<String>,
    keys: HashMap<Vec<u8>, LessSafeKey>,
    kms_calls: u64,
}

impl fmt::Debug for EnvelopeDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopeDecryptor")
            .field("provider", &self.provider)
            .field("expected_context", &self.expected_context)
            .field("expected_key", &self.expected_key)
            .field("kms_calls", &self.kms_calls)
            .finish_non_exhaustive()
    }
}

impl EnvelopeDecryptor {
    /// A decryptor asking `provider` for data keys.
    pub fn new(provider: Arc<dyn KeyProvider>) -> Self {
        Self {
            provider,
            expected_context: EncryptionContext::new(),
            expected_key: None,
            keys: HashMap::new(),
            kms_calls: 0,
        }
    }

    /// Requires every envelope's context to hold `key` = `value`.
    pub fn expect_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.expected_context.insert(key.into(), value.into());
        self
    }

    /// Requires every envelope's data key to be encrypted under the KMS key `key_id` (key id, key
    /// ARN, or alias, which KMS checks).
    pub fn expect_key(mut self, key_id: impl Into<String>) -> Self {
        self.expected_key = Some(key_id.into());
        self
    }

    /// Number of data keys decrypted by the provider so far.
    pub fn kms_calls(&self) -> u64 {
        self.kms_calls
    }

    /// Opens the envelope at the start of `data`, appends its message to `out`, and returns the
    /// envelope's length.
    pub async fn open(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        let p = envelope::parse(data).map_err(Error::Envelope)?;
        for (k, v) in &self.expected_context {
            match p.context.get(k) {
                Some(found) if found == v => {}
                found => {
                    return Err(Error::Envelope(EnvelopeError::ContextMismatch {
                        key: k.clone(),
                        expected: v.clone(),
                        found: found.map_or("no such key".into(), |f| format!("`{f}`")),
                    }))
                }
            }
        }
        let key_id = match &self.expected_key {
            Some(expected) => {
                if !same_key(expected, p.key_id) {
                    return Err(Error::Envelope(EnvelopeError::KeyMismatch {
                        expected: expected.clone(),
                        found: p.key_id.to_owned(),
                    }));
                }
                expected.as_str()
            }
            None => p.key_id,
        };
        if !self.keys.contains_key(p.key_fields) {
            let plain = self
                .provider
                .decrypt_data_key(key_id, p.encrypted_key, &p.context)
                .await?;
            self.kms_calls += 1;
            let unbound = UnboundKey::new(&AES_256_GCM, &plain);
            drop(plain);
            let unbound = unbound.map_err(|_| {
                Error::Envelope(EnvelopeError::Invalid(
                    "the decrypted data key is not 32 bytes".into(),
                ))
            })?;
            if self.keys.len() >= DECRYPTED_KEYS_CACHED {
                self.keys.clear();
            }
            self.keys
                .insert(p.key_fields.to_vec(), LessSafeKey::new(unbound));
        }
        let key = &self.keys[p.key_fields];
        let start = out.len();
        out.extend_from_slice(p.sealed);
        let opened = key
            .open_in_place(
                Nonce::assume_unique_for_key(p.nonce),
                Aad::from(p.header),
                &mut out[start..],
            )
            .map(|m| m.len());
        match opened {
            Ok(n) => {
                out.truncate(start + n);
                Ok(p.len)
            }
            Err(_) => {
                out.truncate(start);
                Err(Error::Envelope(EnvelopeError::Authentication))
            }
        }
    }

    /// Opens every envelope of `data` (envelopes written one after another) and returns the
    /// messages concatenated.
    pub async fn open_all(&mut self, mut data: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len());
        while !data.is_empty() {
            let n = self.open(data, &mut out).await?;
            data = &data[n..];
        }
        Ok(out)
    }
}

/// True when the key `expected` (id, ARN, alias) can be the key ARN `found`. Aliases cannot be told
/// apart here; KMS checks them.
fn same_key(expected: &str, found: &str) -> bool {
    if expected.contains("alias/") {
        return true;
    }
    if expected.starts_with("arn:") {
        return expected == found;
    }
    found == expected || found.ends_with(&format!(":key/{expected}"))
}

/// An envelope with a context, for the fuzz targets' seeds (its key and ciphertext are not real).
#[cfg(test)]
pub(crate) fn fuzz_seed_envelope() -> Vec<u8> {
    let mut context = EncryptionContext::new();
    context.insert("rivulet:pipeline".into(), "ticker".into());
    let mut out = Vec::new();
    envelope::write_header(
        &mut out,
        "arn:aws:kms:us-east-1:000000000000:key/local",
        &envelope::encode_context(&context).expect("a small context"),
        &[7; 48],
        &[1; envelope::NONCE_LEN],
        16,
    );
    out.extend_from_slice(&[9; 32]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Data keys from a local master key: a stand-in for KMS in unit tests and benches. The
    /// "encrypted" key is the plaintext XOR the master key, tagged with the context, so a wrong
    /// context or key is refused as KMS would.
    #[derive(Debug, Default)]
    pub(crate) struct LocalKeys {
        pub(crate) generated: AtomicU64,
    }

    const KEY_ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/local";

    #[async_trait]
    impl KeyProvider for LocalKeys {
        async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
            let n = self.generated.fetch_add(1, Ordering::Relaxed);
            let plaintext: Vec<u8> = (0..32).map(|i| (i as u8) ^ (n as u8)).collect();
            let mut encrypted: Vec<u8> = plaintext.iter().map(|b| b ^ 0x5a).collect();
            encrypted.extend_from_slice(format!("{context:?}").as_bytes());
            Ok(DataKey {
                key_id: KEY_ARN.into(),
                plaintext: plaintext.into(),
                encrypted,
            })
        }

        async fn decrypt_data_key(
            &self,
            _key_id: &str,
            encrypted: &[u8],
            context: &EncryptionContext,
        ) -> Result<Zeroizing<Vec<u8>>> {
            if encrypted.len() < 32 || &encrypted[32..] != format!("{context:?}").as_bytes() {
                return Err(Error::Envelope(EnvelopeError::Kms {
                    operation: "Decrypt",
                    code: "InvalidCiphertextException".into(),
                    message: String::new(),
                }));
            }
            Ok(Zeroizing::new(
                encrypted[..32].iter().map(|b| b ^ 0x5a).collect(),
            ))
        }
    }

    fn encryptor(limits: DataKeyLimits) -> (Arc<LocalKeys>, EnvelopeEncryptor) {
        let keys = Arc::new(LocalKeys::default());
        let enc = EnvelopeEncryptor::builder(Arc::clone(&keys) as Arc<dyn KeyProvider>)
            .with_context(CONTEXT_STREAM, "out")
            .with_limits(limits)
            .build()
            .unwrap();
        (keys, enc)
    }

    #[tokio::test]
    async fn concatenated_envelopes_open_to_the_messages() {
        let (keys, mut enc) = encryptor(DataKeyLimits::default());
        let mut data = Vec::new();
        enc.seal(b"first message\n", &mut data).await.unwrap();
        enc.seal(b"", &mut data).await.unwrap();
        enc.seal(b"second\n", &mut data).await.unwrap();
        assert!(!data.windows(6).any(|w| w == b"second"), "plaintext leaked");
        assert_eq!(
            keys.generated.load(Ordering::Relaxed),
            1,
            "one cached data key"
        );

        let mut dec = EnvelopeDecryptor::new(keys).expect_context(CONTEXT_STREAM, "out");
        assert_eq!(
            dec.open_all(&data).await.unwrap(),
            b"first message\nsecond\n"
        );
        assert_eq!(dec.kms_calls(), 1, "the data key is decrypted once");
    }

    #[tokio::test]
    async fn nonces_never_repeat_under_a_key_and_count_up() {
        let (_, mut enc) = encryptor(DataKeyLimits::default());
        let mut seen = std::collections::HashSet::new();
        for i in 0u64..1000 {
            let mut env = Vec::new();
            enc.seal(b"m", &mut env).await.unwrap();
            let nonce = envelope::parse(&env).unwrap().nonce;
            assert_eq!(nonce[4..], i.to_be_bytes(), "the counter part");
            assert!(seen.insert(nonce), "nonce {i} repeated");
        }
    }

    #[tokio::test]
    async fn any_changed_byte_fails_authentication_or_parsing() {
        let (keys, mut enc) = encryptor(DataKeyLimits::default());
        let mut env = Vec::new();
        enc.seal(b"payload", &mut env).await.unwrap();
        let mut dec = EnvelopeDecryptor::new(keys);
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 1;
            let mut out = Vec::new();
            assert!(
                dec.open(&bad, &mut out).await.is_err(),
                "a flipped bit at byte {i} was accepted"
            );
            assert!(out.is_empty(), "no plaintext is returned on failure");
        }
        let mut bad = env.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        let err = dec.open(&bad, &mut Vec::new()).await.unwrap_err();
        assert!(
            matches!(err, Error::Envelope(EnvelopeError::Authentication)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_required_context_or_key_that_differs_is_refused_before_kms() {
        let (keys, mut enc) = encryptor(DataKeyLimits::default());
        let mut env = Vec::new();
        enc.seal(b"x", &mut env).await.unwrap();
        let mut dec = EnvelopeDecryptor::new(Arc::clone(&keys) as Arc<dyn KeyProvider>)
            .expect_context(CONTEXT_STREAM, "other");
        let err = dec.open(&env, &mut Vec::new()).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("expected `other`, the envelope has `out`"),
            "{err}"
        );
        let mut dec = EnvelopeDecryptor::new(keys).expect_key("1234abcd");
        let err = dec.open(&env, &mut Vec::new()).await.unwrap_err();
        assert!(
            matches!(err, Error::Envelope(EnvelopeError::KeyMismatch { .. })),
            "{err}"
        );
        assert_eq!(dec.kms_calls(), 0);
    }

    #[tokio::test]
    async fn data_keys_are_replaced_at_each_limit() {
        let limits = DataKeyLimits {
            max_messages: 3,
            ..DataKeyLimits::default()
        };
        let (keys, mut enc) = encryptor(limits);
        for _ in 0..7 {
            enc.seal(b"m", &mut Vec::new()).await.unwrap();
        }
        assert_eq!(
            keys.generated.load(Ordering::Relaxed),
            3,
            "7 messages, 3 per key"
        );

        let limits = DataKeyLimits {
            max_bytes: 10,
            ..DataKeyLimits::default()
        };
        let (keys, mut enc) = encryptor(limits);
        for _ in 0..4 {
            enc.seal(b"12345", &mut Vec::new()).await.unwrap();
        }
        assert_eq!(
            keys.generated.load(Ordering::Relaxed),
            2,
            "20 bytes, 10 per key"
        );

        let limits = DataKeyLimits {
            max_age: Duration::from_millis(30),
            ..DataKeyLimits::default()
        };
        let (keys, mut enc) = encryptor(limits);
        enc.seal(b"a", &mut Vec::new()).await.unwrap();
        enc.seal(b"b", &mut Vec::new()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        enc.seal(b"c", &mut Vec::new()).await.unwrap();
        assert_eq!(
            keys.generated.load(Ordering::Relaxed),
            2,
            "a new key after max_age"
        );
    }

    #[tokio::test]
    async fn a_torn_envelope_at_the_end_of_a_file_is_cut_and_others_are_kept() {
        let (keys, mut enc) = encryptor(DataKeyLimits::default());
        let mut data = Vec::new();
        enc.seal(b"one\n", &mut data).await.unwrap();
        enc.seal(b"two\n", &mut data).await.unwrap();
        let whole = data.len();
        enc.seal(b"three\n", &mut data).await.unwrap();
        data.truncate(data.len() - 5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, &data).unwrap();
        truncate_torn_envelope(&path).await.unwrap();
        let kept = std::fs::read(&path).unwrap();
        assert_eq!(kept.len(), whole);
        let mut dec = EnvelopeDecryptor::new(keys);
        assert_eq!(dec.open_all(&kept).await.unwrap(), b"one\ntwo\n");

        std::fs::write(&path, b"{\"plain\":1}\n").unwrap();
        let err = truncate_torn_envelope(&path).await.unwrap_err();
        assert!(err.to_string().contains("not envelopes"), "{err}");
    }

    /// Three envelopes, and where each starts and its ciphertext length field is.
    async fn three_envelopes() -> (Vec<u8>, Vec<(usize, usize)>) {
        let (_, mut enc) = encryptor(DataKeyLimits::default());
        let mut data = Vec::new();
        let mut at = Vec::new();
        for m in [&b"one\n"[..], b"two\n", b"three\n"] {
            let start = data.len();
            enc.seal(m, &mut data).await.unwrap();
            let header = envelope::parse(&data[start..]).unwrap().header.len();
            at.push((start, start + header - 4));
        }
        (data, at)
    }

    #[tokio::test]
    async fn a_damaged_length_field_is_refused_naming_its_offset_and_nothing_is_cut() {
        let (data, at) = three_envelopes().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        // A flipped high bit in the ciphertext length of the first and of the second envelope:
        // each now runs past the end of the file, with complete envelopes after it.
        for (which, (start, len_field)) in at.iter().take(2).enumerate() {
            let mut damaged = data.clone();
            damaged[*len_field] ^= 0x01;
            std::fs::write(&path, &damaged).unwrap();
            let err = truncate_torn_envelope(&path).await.unwrap_err().to_string();
            assert!(
                err.contains(&format!("damaged at byte {start}")),
                "envelope {which}: {err}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing cut");
        }
        // A length field that makes the envelope shorter: the next one does not start where it
        // says, which is not envelopes either.
        let mut damaged = data.clone();
        damaged[at[0].1 + 3] ^= 0x02;
        std::fs::write(&path, &damaged).unwrap();
        let err = truncate_torn_envelope(&path).await.unwrap_err().to_string();
        assert!(err.contains("not envelopes at byte"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), damaged);
    }

    #[tokio::test]
    async fn a_tail_torn_anywhere_in_the_last_envelope_is_cut_to_the_envelopes_before_it() {
        let (data, at) = three_envelopes().await;
        let last = at[2].0;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        // Torn in the magic, in the key id, in the length field, in the ciphertext, in the tag.
        for cut in [last + 1, last + 6, at[2].1 + 2, at[2].1 + 5, data.len() - 1] {
            std::fs::write(&path, &data[..cut]).unwrap();
            truncate_torn_envelope(&path).await.unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), &data[..last], "cut at {cut}");
        }
        std::fs::write(&path, &data).unwrap();
        truncate_torn_envelope(&path).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data, "a whole file is kept");
    }

    #[test]
    fn key_ids_match_by_arn_or_bare_id() {
        let arn = "arn:aws:kms:us-east-1:1:key/abcd";
        assert!(same_key(arn, arn));
        assert!(same_key("abcd", arn));
        assert!(!same_key("abc", arn));
        assert!(!same_key("arn:aws:kms:us-east-1:1:key/other", arn));
        assert!(same_key("alias/mine", arn));
    }
}
