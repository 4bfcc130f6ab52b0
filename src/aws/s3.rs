//! Reading and writing S3 objects through `object_store`, with the SDK's credentials: the client
//! the S3 sink writes with, and the object reader that WASM modules, reference data and replay
//! use.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt as _;

use crate::{Error, Result};

/// Server-side encryption requested for every object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSideEncryption {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS with this key (id, ARN or alias).
    Kms(String),
}

/// AWS credentials for object_store, from the SDK's default chain (environment, profile, SSO
/// cache, web identity, container and instance roles), cached until shortly before they expire.
#[derive(Debug)]
struct SdkCredentials {
    provider: aws_sdk_kms::config::SharedCredentialsProvider,
    cached:
        tokio::sync::Mutex<Option<(Arc<object_store::aws::AwsCredential>, std::time::SystemTime)>>,
}

#[async_trait]
impl object_store::CredentialProvider for SdkCredentials {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        use aws_sdk_kms::config::ProvideCredentials as _;
        let mut cached = self.cached.lock().await;
        if let Some((c, until)) = cached.as_ref() {
            if std::time::SystemTime::now() < *until {
                return Ok(Arc::clone(c));
            }
        }
        let creds = self.provider.provide_credentials().await.map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            }
        })?;
        let now = std::time::SystemTime::now();
        // Refreshed 5 minutes before they expire; credentials that expire sooner (or are past
        // their expiry, as instance credentials can be) are kept a minute, not fetched per request.
        let until = match creds.expiry() {
            Some(e) => e
                .checked_sub(Duration::from_secs(300))
                .filter(|u| *u > now + Duration::from_secs(30))
                .unwrap_or(now + Duration::from_secs(60)),
            None => now + Duration::from_secs(900),
        };
        let c = Arc::new(object_store::aws::AwsCredential {
            key_id: creds.access_key_id().to_owned(),
            secret_key: creds.secret_access_key().to_owned(),
            token: creds.session_token().map(str::to_owned),
        });
        *cached = Some((Arc::clone(&c), until));
        Ok(c)
    }
}

/// The object store path of S3 key `key`, taken as it is (no segment dropped or re-encoded), or
/// why S3 keys of that form cannot be written here.
pub(crate) fn object_path(key: &str) -> std::result::Result<ObjectPath, String> {
    ObjectPath::parse(key).map_err(|_| {
        format!(
            "the key `{key}` cannot be written: keys here have no empty path segment (`//`), \
             no segment `.` or `..` and no control character"
        )
    })
}

/// Reads one object from S3 (credentials from the SDK's default chain).
pub async fn get_object(
    bucket: &str,
    key: &str,
    region: Option<String>,
    endpoint_url: Option<String>,
) -> Result<Bytes> {
    let shared = crate::aws::load_config(region, endpoint_url, "s3").await?;
    get_object_with(bucket, key, &shared).await
}

/// [`get_object`] with the credentials, region and endpoint of `config`.
pub async fn get_object_with(
    bucket: &str,
    key: &str,
    config: &aws_config::SdkConfig,
) -> Result<Bytes> {
    let store = build_s3(bucket, config, None)?;
    let fail =
        |e: object_store::Error| Error::sink("s3", format!("reading s3://{bucket}/{key}: {e}"));
    let path = object_path(key).map_err(|e| Error::sink("s3", e))?;
    store
        .get(&path)
        .await
        .map_err(fail)?
        .bytes()
        .await
        .map_err(fail)
}

/// Decompresses gzip, zstd or framed-snappy data, recognised by its magic bytes; other data is
/// returned as it is.
pub fn decompress(data: Vec<u8>) -> Result<Vec<u8>> {
    use std::io::Read as _;
    const SNAPPY: &[u8] = b"\xff\x06\x00\x00sNaPpY";
    let mut out = Vec::with_capacity(data.len() * 4);
    let res = if data.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(&data[..]).read_to_end(&mut out)
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(&data[..]).and_then(|mut d| d.read_to_end(&mut out))
    } else if data.starts_with(SNAPPY) {
        snap::read::FrameDecoder::new(&data[..]).read_to_end(&mut out)
    } else {
        return Ok(data);
    };
    res.map_err(|e| Error::io("decompressing", e))?;
    Ok(out)
}

/// An object_store S3 client for `bucket`.
pub(crate) fn build_s3(
    bucket: &str,
    shared: &aws_config::SdkConfig,
    sse: Option<&ServerSideEncryption>,
) -> Result<object_store::aws::AmazonS3> {
    let endpoint_url = shared.endpoint_url().map(str::to_owned);
    let provider = shared
        .credentials_provider()
        .ok_or_else(|| Error::config("s3", "no AWS credentials provider is configured"))?;
    let region = shared.region().map(|r| r.to_string()).ok_or_else(|| {
        Error::config(
            "region",
            "no AWS region: set it here or in AWS_REGION / the AWS profile",
        )
    })?;
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_credentials(Arc::new(SdkCredentials {
            provider,
            cached: tokio::sync::Mutex::new(None),
        }));
    if let Some(url) = endpoint_url {
        b = b
            .with_allow_http(url.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .with_endpoint(url);
    }
    match sse {
        Some(ServerSideEncryption::Kms(key)) => b = b.with_sse_kms_encryption(key),
        Some(ServerSideEncryption::S3) => {
            let key: object_store::aws::AmazonS3ConfigKey = "aws_server_side_encryption"
                .parse()
                .map_err(|e| Error::config("s3", format!("{e}")))?;
            b = b.with_config(key, "AES256")
        }
        None => {}
    }
    b.build()
        .map_err(|e| Error::config("s3", format!("cannot build the S3 client: {e}")))
}
