//! The sinks a pipeline file describes, built (with their encryption) and checked.

use super::*;

impl PipelineConfig {
    /// The envelope encryptor of a sink receiving `stream`, when it has an `encryption` table.
    #[cfg(feature = "aws")]
    pub(super) async fn encryptor(
        &self,
        e: Option<&EncryptionConfig>,
        stream: &str,
    ) -> Result<Option<crate::crypto::EnvelopeEncryptor>> {
        let Some(e) = e else { return Ok(None) };
        let provider = crate::crypto::KmsKeyProvider::new(
            e.kms_key_id.clone(),
            e.region.clone(),
            e.endpoint_url.clone(),
        )
        .await?;
        let mut limits = crate::crypto::DataKeyLimits::default();
        if let Some(s) = e.max_key_age_secs {
            limits.max_age = Duration::from_secs(s);
        }
        if let Some(b) = e.max_bytes_per_key {
            limits.max_bytes = b;
        }
        if let Some(m) = e.max_messages_per_key {
            limits.max_messages = m;
        }
        let mut b = crate::crypto::EnvelopeEncryptor::builder(std::sync::Arc::new(provider))
            .with_limits(limits);
        for (k, v) in &e.context {
            b = b.with_context(k.clone(), v.clone());
        }
        b.with_context(crate::crypto::CONTEXT_PIPELINE, self.name())
            .with_context(crate::crypto::CONTEXT_STREAM, stream)
            .build()
            .map(Some)
    }

    /// The sink a `[[sinks]]` table describes, for the stream `stream`.
    pub(super) async fn build_sink(&self, s: &SinkConfig, stream: &str) -> Result<Box<dyn Sink>> {
        let application_csv = self.application_csv(stream);
        let encoding = |e: &EncodingConfig| text_format(e, application_csv);
        #[cfg(feature = "aws")]
        let record_format = |e: &EncodingConfig| record_format(e, application_csv);
        Ok(match s {
            SinkConfig::Stdout { format, .. } => Box::new(StdoutSink::new(encoding(format))),
            SinkConfig::Stderr { format, .. } => Box::new(StdoutSink::stderr(encoding(format))),
            SinkConfig::File {
                path,
                format,
                roll_bytes,
                roll_interval_secs,
                truncate,
                encryption,
                ..
            } => {
                let b = FileSink::builder(self.resolve(path))
                    .with_format(encoding(format))
                    .with_roll_bytes(*roll_bytes)
                    .with_roll_interval(roll_interval_secs.map(Duration::from_secs))
                    .with_truncate(*truncate);
                let b = self.file_encryption(b, encryption.as_ref(), stream).await?;
                Box::new(b.build()?)
            }
            #[cfg(feature = "aws")]
            SinkConfig::Firehose {
                delivery_stream,
                format,
                region,
                endpoint_url,
                encryption,
                ..
            } => {
                let mut b = crate::sink::FirehoseSink::builder(delivery_stream.clone())
                    .client_options(ClientOptions::at(region.as_ref(), endpoint_url.as_ref()))
                    .format(record_format(format))
                    .delivery_settings(delivery_settings(s));
                if let Some(enc) = self.encryptor(encryption.as_ref(), stream).await? {
                    b = b.encryption(enc);
                }
                Box::new(b.build().await?)
            }
            #[cfg(feature = "aws")]
            SinkConfig::Kinesis {
                stream_name,
                partition_key,
                explicit_hash_key,
                format,
                region,
                endpoint_url,
                encryption,
                ..
            } => {
                let mut b = crate::kinesis::KinesisSink::builder(stream_name.clone())
                    .client_options(ClientOptions::at(region.as_ref(), endpoint_url.as_ref()))
                    .partition_key_column(partition_key.clone())
                    .format(record_format(format))
                    .delivery_settings(delivery_settings(s));
                if let Some(h) = explicit_hash_key {
                    b = b.explicit_hash_key_column(h.clone());
                }
                if let Some(enc) = self.encryptor(encryption.as_ref(), stream).await? {
                    b = b.encryption(enc);
                }
                Box::new(b.build().await?)
            }
            #[cfg(feature = "aws")]
            SinkConfig::S3 {
                bucket,
                prefix,
                name,
                format,
                compression,
                roll_bytes,
                roll_interval_ms,
                max_open_partitions,
                max_buffered_bytes,
                multipart_threshold,
                region,
                endpoint_url,
                server_side_encryption,
                sse_kms_key_id,
                encryption,
                ..
            } => {
                let mut b = crate::sink::S3Sink::builder(bucket.clone())
                    .with_name(self.s3_object_name(name, stream))
                    .with_prefix(prefix.clone())
                    .with_format(object_format(format))
                    .with_compression((*compression).into());
                b = s3_limits(
                    b,
                    *roll_bytes,
                    *roll_interval_ms,
                    *max_open_partitions,
                    *max_buffered_bytes,
                    *multipart_threshold,
                );
                b = s3_client(b, region.as_deref(), endpoint_url.as_deref());
                if let Some(sse) =
                    server_side_encryption_of(server_side_encryption, sse_kms_key_id)?
                {
                    b = b.with_server_side_encryption(sse);
                }
                if let Some(enc) = self.encryptor(encryption.as_ref(), stream).await? {
                    b = b.with_encryption(enc);
                }
                Box::new(b.build().await?)
            }
            #[cfg(not(feature = "aws"))]
            SinkConfig::Firehose { .. } | SinkConfig::Kinesis { .. } | SinkConfig::S3 { .. } => {
                return Err(Error::config(
                    "sinks.type",
                    "the firehose sink needs rivulet built with the `aws` feature",
                ))
            }
        })
    }

    /// Whether a sink receiving `stream` writes CSV by default: a KDA application's output format
    /// is the default of the sinks of its outputs (the output's DestinationSchema, else the file's
    /// OutputFormatType), never of the error output or the raw copy.
    fn application_csv(&self, stream: &str) -> bool {
        match stream {
            crate::ERROR_STREAM | crate::RAW_STREAM => false,
            _ => self
                .kda_application()
                .ok()
                .flatten()
                .and_then(|a| {
                    a.output_formats
                        .iter()
                        .find(|(name, _)| name == stream)
                        .map(|(_, f)| f.clone())
                        .or(a.output_format)
                })
                .is_some_and(|f| f.eq_ignore_ascii_case("CSV")),
        }
    }

    /// A file sink's envelope encryption, when its table has one.
    async fn file_encryption(
        &self,
        b: crate::sink::FileSinkBuilder,
        encryption: Option<&EncryptionConfig>,
        stream: &str,
    ) -> Result<crate::sink::FileSinkBuilder> {
        #[cfg(feature = "aws")]
        if let Some(enc) = self.encryptor(encryption, stream).await? {
            return Ok(b.with_encryption(enc));
        }
        #[cfg(not(feature = "aws"))]
        if encryption.is_some() {
            let _ = stream;
            return Err(Error::config(
                "sinks.encryption",
                "encryption needs rivulet built with the `aws` feature",
            ));
        }
        Ok(b)
    }
}

/// The format of a text sink (standard output, a file): CSV with a header row, or JSON lines.
fn text_format(format: &EncodingConfig, application_csv: bool) -> OutputFormat {
    if format.csv(application_csv) {
        OutputFormat::Csv {
            delimiter: b',',
            header: true,
        }
    } else {
        OutputFormat::JsonLines
    }
}

/// An S3 sink's object format.
#[cfg(feature = "aws")]
fn object_format(format: &ObjectFormatConfig) -> crate::sink::ObjectFormat {
    use crate::sink::ObjectFormat;
    match format {
        ObjectFormatConfig::Json => ObjectFormat::Text(OutputFormat::JsonLines),
        ObjectFormatConfig::Csv => ObjectFormat::Text(OutputFormat::Csv {
            delimiter: b',',
            header: true,
        }),
        ObjectFormatConfig::Parquet => ObjectFormat::Parquet,
    }
}

#[cfg(feature = "aws")]
impl From<CompressionConfig> for crate::sink::Compression {
    fn from(c: CompressionConfig) -> Self {
        match c {
            CompressionConfig::None => Self::None,
            CompressionConfig::Gzip => Self::Gzip,
            CompressionConfig::Zstd => Self::Zstd,
            CompressionConfig::Snappy => Self::Snappy,
        }
    }
}

/// An S3 sink's object and memory limits, where its table sets them.
#[cfg(feature = "aws")]
fn s3_limits(
    mut b: crate::sink::S3SinkBuilder,
    roll_bytes: Option<usize>,
    roll_interval_ms: Option<u64>,
    max_open_partitions: Option<usize>,
    max_buffered_bytes: Option<usize>,
    multipart_threshold: Option<usize>,
) -> crate::sink::S3SinkBuilder {
    if let Some(n) = roll_bytes {
        b = b.with_roll_bytes(n);
    }
    if let Some(ms) = roll_interval_ms {
        b = b.with_roll_interval(Duration::from_millis(ms));
    }
    if let Some(n) = max_open_partitions {
        b = b.with_max_open_partitions(n);
    }
    if let Some(n) = max_buffered_bytes {
        b = b.with_max_buffered_bytes(n);
    }
    if let Some(n) = multipart_threshold {
        b = b.with_multipart_threshold(n);
    }
    b
}

/// The region and endpoint of an S3 sink's client, where its table sets them.
#[cfg(feature = "aws")]
fn s3_client(
    mut b: crate::sink::S3SinkBuilder,
    region: Option<&str>,
    endpoint_url: Option<&str>,
) -> crate::sink::S3SinkBuilder {
    if let Some(r) = region {
        b = b.with_region(r);
    }
    if let Some(u) = endpoint_url {
        b = b.with_endpoint_url(u);
    }
    b
}

/// S3's own encryption of the objects (`server_side_encryption`, `sse_kms_key_id`).
#[cfg(feature = "aws")]
fn server_side_encryption_of(
    sse: &Option<SseConfig>,
    key: &Option<String>,
) -> Result<Option<crate::sink::ServerSideEncryption>> {
    use crate::sink::ServerSideEncryption;
    match (sse, key) {
        (Some(SseConfig::Aes256), None) => Ok(Some(ServerSideEncryption::S3)),
        (Some(SseConfig::Kms), Some(k)) => Ok(Some(ServerSideEncryption::Kms(k.clone()))),
        (None, None) => Ok(None),
        _ => Err(Error::config(
            "sinks.server_side_encryption",
            "use server_side_encryption = \"aes256\", or \"kms\" with sse_kms_key_id",
        )),
    }
}

/// The format of a record-oriented sink: one row per record, so no CSV header rows in the middle
/// of a stream.
#[cfg(feature = "aws")]
pub(super) fn record_format(format: &EncodingConfig, application_csv: bool) -> OutputFormat {
    if format.csv(application_csv) {
        OutputFormat::Csv {
            delimiter: b',',
            header: false,
        }
    } else {
        OutputFormat::JsonLines
    }
}

#[cfg(feature = "aws")]
pub(super) fn delivery_settings(s: &SinkConfig) -> crate::sink::DeliverySettings {
    let mut d = crate::sink::DeliverySettings::default();
    if let SinkConfig::Firehose {
        max_attempts,
        max_retry_ms,
        max_concurrent_requests,
        ..
    }
    | SinkConfig::Kinesis {
        max_attempts,
        max_retry_ms,
        max_concurrent_requests,
        ..
    } = s
    {
        if let Some(n) = max_attempts {
            d.max_attempts = *n;
        }
        if let Some(ms) = max_retry_ms {
            d.max_retry_time = Duration::from_millis(*ms);
        }
        if let Some(n) = max_concurrent_requests {
            d.max_concurrent_requests = *n;
        }
    }
    d
}

pub(super) fn check_sink(key: &str, s: &SinkConfig) -> Result<()> {
    #[cfg(feature = "aws")]
    if let SinkConfig::Firehose {
        delivery_stream, ..
    } = s
    {
        if delivery_stream.trim().is_empty() {
            return Err(Error::config(format!("{key}.delivery_stream"), "is empty"));
        }
        delivery_settings(s).validate(key)?;
    }
    #[cfg(feature = "aws")]
    if let SinkConfig::Kinesis {
        stream_name,
        partition_key,
        ..
    } = s
    {
        if stream_name.trim().is_empty() {
            return Err(Error::config(format!("{key}.stream_name"), "is empty"));
        }
        if partition_key.trim().is_empty() {
            return Err(Error::config(format!("{key}.partition_key"), "is empty"));
        }
        delivery_settings(s).validate(key)?;
    }
    if let SinkConfig::S3 { bucket, .. } = s {
        if bucket.trim().is_empty() {
            return Err(Error::config(format!("{key}.bucket"), "is empty"));
        }
    }
    #[cfg(not(feature = "aws"))]
    if let SinkConfig::Firehose { .. } | SinkConfig::Kinesis { .. } | SinkConfig::S3 { .. } = s {
        return Err(Error::config(
            format!("{key}.type"),
            "the firehose sink needs rivulet built with the `aws` feature",
        ));
    }
    if let SinkConfig::File {
        path,
        roll_bytes,
        roll_interval_secs,
        ..
    } = s
    {
        if path.as_os_str().is_empty() {
            return Err(Error::config(format!("{key}.path"), "is empty"));
        }
        if *roll_bytes == Some(0) {
            return Err(Error::config(
                format!("{key}.roll_bytes"),
                "must be greater than 0",
            ));
        }
        if *roll_interval_secs == Some(0) {
            return Err(Error::config(
                format!("{key}.roll_interval_secs"),
                "must be greater than 0",
            ));
        }
    }
    Ok(())
}
