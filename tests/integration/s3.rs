//! The S3 sink and KMS envelope encryption against moto on 127.0.0.1: prefixes and rolling,
//! Parquet and compressed objects read back, server-side encryption on the objects, names that a
//! replay overwrites, and envelopes through moto's KMS, tampered or not.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use rivulet::crypto::{
    EnvelopeDecryptor, EnvelopeEncryptor, EnvelopeError, KeyProvider, KmsKeyProvider,
    CONTEXT_PIPELINE, CONTEXT_STREAM,
};
use rivulet::s3::{Compression, ObjectFormat, S3Sink, ServerSideEncryption};
use rivulet::{
    Encoder, Error, FileCheckpointStore, FileSource, GeneratorSource, MemorySink, OutputFormat,
    Pipeline, RecordFormat,
};

use crate::support::moto::MotoServer;
use crate::support::s3;

const BUCKET: &str = "out";

fn sdk_config(moto: &MotoServer) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_kms::config::SharedCredentialsProvider::new(
            Credentials::new("test", "test", None, None, "tests"),
        ))
        .build()
}

fn kms(moto: &MotoServer) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&sdk_config(moto))
}

async fn create_key(moto: &MotoServer) -> String {
    kms(moto)
        .create_key()
        .send()
        .await
        .expect("create a KMS key")
        .key_metadata()
        .expect("key metadata")
        .arn()
        .expect("key ARN")
        .to_owned()
}

fn sink(moto: &MotoServer) -> rivulet::S3SinkBuilder {
    S3Sink::builder(BUCKET).with_aws_config(sdk_config(moto))
}

/// Runs 1,500 generated ticker rows through a projection into `sinks`; returns the rows as JSON
/// lines (the reference, from a memory sink on the same stream).
async fn run(sinks: Vec<S3Sink>) -> Vec<String> {
    let reference = MemorySink::new();
    let sent = reference.handle();
    let mut b = Pipeline::builder()
        .source(
            GeneratorSource::builder()
                .with_limit(Some(1500))
                .with_start_time_ms(Some(1_700_000_000_000))
                .build()
                .unwrap(),
        )
        .sql("SELECT ticker_symbol, sector, price FROM source")
        .sink(reference)
        .batch_settings(rivulet::BatchSettings {
            max_rows: 200,
            ..rivulet::BatchSettings::default()
        });
    for s in sinks {
        b = b.sink(s);
    }
    let report = b
        .build()
        .await
        .unwrap()
        .run()
        .await
        .expect("the pipeline runs");
    assert_eq!(report.metrics.records_error, 0);
    json_lines(&sent.batches())
}

fn json_lines(batches: &[RecordBatch]) -> Vec<String> {
    let encoder = Encoder::new(OutputFormat::JsonLines);
    let mut lines = Vec::new();
    for b in batches {
        for r in encoder.encode_rows(b).unwrap() {
            lines.push(String::from_utf8(r.to_vec()).unwrap().trim_end().to_owned());
        }
    }
    lines.sort();
    lines
}

/// Runs the `rivulet` CLI in `dir` (also its home) with the emulator's credentials and nothing
/// looked up anywhere else.
fn cli_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(args)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", dir)
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run rivulet")
}

fn keys_under(moto: &MotoServer, prefix: &str) -> Vec<String> {
    s3::list_keys(moto.port(), BUCKET)
        .into_iter()
        .filter(|k| k.starts_with(prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_keyed_like_firehose_rolled_by_size_and_hold_every_row_once() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    let s = sink(&moto)
        .with_name("ticker")
        .with_prefix("data/!{partitionKeyFromQuery:sector}/!{timestamp:yyyy/MM}/")
        .with_roll_bytes(8 << 10)
        .build()
        .await
        .unwrap();
    let sent = run(vec![s]).await;
    assert_eq!(sent.len(), 1500);

    let keys = keys_under(&moto, "data/");
    let mut sectors = BTreeMap::new();
    let mut delivered = Vec::new();
    for key in &keys {
        // data/<sector>/<yyyy>/<MM>/ticker-<range>-<n>.json
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 5, "{key}");
        assert!(parts[2].len() == 4 && parts[3].len() == 2, "{key}");
        assert!(
            parts[4].starts_with("ticker-") && parts[4].ends_with(".json"),
            "{key}"
        );
        *sectors.entry(parts[1].to_owned()).or_insert(0) += 1;
        let body = String::from_utf8(s3::get_object(moto.port(), BUCKET, key)).unwrap();
        for line in body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["sector"], parts[1], "a row in its sector's prefix: {key}");
            delivered.push(line.to_owned());
        }
    }
    assert!(sectors.len() > 1, "one prefix per sector: {sectors:?}");
    assert!(
        keys.len() > sectors.len(),
        "8 KiB objects roll: {} objects for {} sectors",
        keys.len(),
        sectors.len()
    );
    delivered.sort();
    assert_eq!(delivered, sent, "every row exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_and_compressed_objects_read_back_to_the_rows() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    let mut sinks = Vec::new();
    for (prefix, format, compression) in [
        ("parquet/", ObjectFormat::Parquet, Compression::Zstd),
        (
            "gzip/",
            ObjectFormat::Text(OutputFormat::JsonLines),
            Compression::Gzip,
        ),
        (
            "zstd/",
            ObjectFormat::Text(OutputFormat::JsonLines),
            Compression::Zstd,
        ),
        (
            "snappy/",
            ObjectFormat::Text(OutputFormat::JsonLines),
            Compression::Snappy,
        ),
    ] {
        sinks.push(
            sink(&moto)
                .with_prefix(prefix)
                .with_format(format)
                .with_compression(compression)
                .with_roll_bytes(16 << 10)
                .build()
                .await
                .unwrap(),
        );
    }
    let sent = run(sinks).await;

    let mut batches = Vec::new();
    for key in keys_under(&moto, "parquet/") {
        assert!(key.ends_with(".parquet"), "{key}");
        let body = bytes::Bytes::from(s3::get_object(moto.port(), BUCKET, &key));
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body)
            .expect("a Parquet file")
            .build()
            .unwrap();
        for b in reader {
            batches.push(b.unwrap());
        }
    }
    assert_eq!(json_lines(&batches), sent, "Parquet holds every row");
    assert_eq!(
        batches[0].column(2).data_type(),
        &arrow::datatypes::DataType::Float64,
        "types are kept"
    );
    assert!(!batches[0].column(0).as_string::<i32>().value(0).is_empty());

    for (prefix, ext) in [
        ("gzip/", ".json.gz"),
        ("zstd/", ".json.zst"),
        ("snappy/", ".json.snappy"),
    ] {
        let mut lines = Vec::new();
        let keys = keys_under(&moto, prefix);
        assert!(keys.len() > 1, "{prefix}: rolled");
        for key in keys {
            assert!(key.ends_with(ext), "{key}");
            let body = s3::get_object(moto.port(), BUCKET, &key);
            let plain = match ext {
                ".json.gz" => {
                    let mut s = String::new();
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_string(&mut s)
                        .unwrap();
                    s
                }
                ".json.zst" => String::from_utf8(zstd::decode_all(&body[..]).unwrap()).unwrap(),
                _ => {
                    let mut s = String::new();
                    snap::read::FrameDecoder::new(&body[..])
                        .read_to_string(&mut s)
                        .unwrap();
                    s
                }
            };
            lines.extend(plain.lines().map(str::to_owned));
        }
        lines.sort();
        assert_eq!(lines, sent, "{prefix} round trip");
    }
}

/// The `x-amz-server-side-encryption*` headers of an object.
fn sse_headers(moto: &MotoServer, key: &str) -> BTreeMap<String, String> {
    s3::head_object(moto.port(), BUCKET, key)
        .into_iter()
        .filter(|(k, _)| k.starts_with("x-amz-server-side-encryption"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_encryption_is_requested_for_every_object() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    let key_arn = create_key(&moto).await;
    let kms_sink = sink(&moto)
        .with_prefix("kms/")
        .with_server_side_encryption(ServerSideEncryption::Kms(key_arn.clone()))
        .build()
        .await
        .unwrap();
    let s3_sink = sink(&moto)
        .with_prefix("sse-s3/")
        .with_server_side_encryption(ServerSideEncryption::S3)
        .build()
        .await
        .unwrap();
    run(vec![kms_sink, s3_sink]).await;

    let kms_keys = keys_under(&moto, "kms/");
    assert!(!kms_keys.is_empty());
    for key in kms_keys {
        let h = sse_headers(&moto, &key);
        assert_eq!(
            h.get("x-amz-server-side-encryption").map(String::as_str),
            Some("aws:kms"),
            "{key}: {h:?}"
        );
        assert_eq!(
            h.get("x-amz-server-side-encryption-aws-kms-key-id"),
            Some(&key_arn),
            "{key}: {h:?}"
        );
    }
    let s3_keys = keys_under(&moto, "sse-s3/");
    assert!(!s3_keys.is_empty());
    for key in s3_keys {
        let h = sse_headers(&moto, &key);
        assert_eq!(
            h.get("x-amz-server-side-encryption").map(String::as_str),
            Some("AES256"),
            "{key}: {h:?}"
        );
    }
}

/// Runs the file `input` through the S3 sink (prefix `replay/`) with a checkpoint file.
async fn run_file(moto: &MotoServer, input: &std::path::Path, checkpoint: &std::path::Path) {
    let s = sink(moto)
        .with_prefix("replay/")
        .with_format(ObjectFormat::Text(OutputFormat::JsonLines))
        .build()
        .await
        .unwrap();
    Pipeline::builder()
        .source(FileSource::builder(input).build().unwrap())
        .format(RecordFormat::Json)
        .sql("SELECT id FROM source")
        .sink(s)
        .checkpoint_store(FileCheckpointStore::new(checkpoint))
        .build()
        .await
        .unwrap()
        .run()
        .await
        .expect("the pipeline runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_a_checkpoint_overwrites_its_objects_instead_of_duplicating() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let cp = dir.path().join("checkpoint.json");
    let lines =
        |r: std::ops::Range<u32>| r.map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>();
    std::fs::write(&input, lines(0..300)).unwrap();
    run_file(&moto, &input, &cp).await;
    let first = keys_under(&moto, "replay/");
    assert_eq!(first.len(), 1);

    // More input; the run after the checkpoint "crashes" before its own checkpoint is kept: the
    // checkpoint file is put back, and the same input is read again.
    std::fs::write(&input, lines(0..600)).unwrap();
    let saved = std::fs::read(&cp).unwrap();
    run_file(&moto, &input, &cp).await;
    let second: Vec<String> = keys_under(&moto, "replay/")
        .into_iter()
        .filter(|k| !first.contains(k))
        .collect();
    assert_eq!(second.len(), 1, "{second:?}");
    std::fs::write(&cp, &saved).unwrap();
    run_file(&moto, &input, &cp).await;

    let all = keys_under(&moto, "replay/");
    assert_eq!(all.len(), 2, "the replay wrote the same key again: {all:?}");
    let mut ids: Vec<u64> = Vec::new();
    for key in &all {
        let body = String::from_utf8(s3::get_object(moto.port(), BUCKET, key)).unwrap();
        for line in body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            ids.push(v["id"].as_u64().unwrap());
        }
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..600).collect::<Vec<u64>>(),
        "every row once, none twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_round_trip_through_kms_and_refuse_tampering_and_other_keys_or_contexts() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let key_a = create_key(&moto).await;
    let key_b = create_key(&moto).await;
    let provider: Arc<dyn KeyProvider> =
        Arc::new(KmsKeyProvider::with_client(kms(&moto), key_a.clone()));
    let mut enc = EnvelopeEncryptor::builder(Arc::clone(&provider))
        .with_context(CONTEXT_PIPELINE, "orders")
        .with_context(CONTEXT_STREAM, "DESTINATION_SQL_STREAM")
        .build()
        .unwrap();
    let mut sealed = Vec::new();
    for i in 0..50 {
        enc.seal(format!("{{\"n\":{i}}}\n").as_bytes(), &mut sealed)
            .await
            .unwrap();
    }
    assert_eq!(enc.keys_generated(), 1, "one data key for 50 messages");

    let mut dec = EnvelopeDecryptor::new(Arc::clone(&provider))
        .expect_key(key_a.clone())
        .expect_context(CONTEXT_STREAM, "DESTINATION_SQL_STREAM");
    let plain = String::from_utf8(dec.open_all(&sealed).await.unwrap()).unwrap();
    assert_eq!(plain.lines().count(), 50);
    assert!(plain.starts_with("{\"n\":0}\n"));
    assert_eq!(
        dec.kms_calls(),
        1,
        "the data key is decrypted once and cached"
    );

    // One envelope, to tamper with.
    let mut one = Vec::new();
    enc.seal(b"secret\n", &mut one).await.unwrap();

    let mut bad = one.clone();
    let last = bad.len() - 20;
    bad[last] ^= 0x01;
    let err = EnvelopeDecryptor::new(Arc::clone(&provider))
        .open_all(&bad)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Envelope(EnvelopeError::Authentication)),
        "{err}"
    );

    let err = EnvelopeDecryptor::new(Arc::clone(&provider))
        .expect_context(CONTEXT_PIPELINE, "payments")
        .open_all(&one)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Envelope(EnvelopeError::ContextMismatch { .. })),
        "{err}"
    );

    let err = EnvelopeDecryptor::new(Arc::clone(&provider))
        .expect_key(key_b.clone())
        .open_all(&one)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Envelope(EnvelopeError::KeyMismatch { .. })),
        "{err}"
    );

    // The context in the envelope changed (same length): KMS refuses the data key under it.
    let at = one
        .windows(b"orders".len())
        .position(|w| w == b"orders")
        .unwrap();
    let mut changed = one.clone();
    changed[at..at + 6].copy_from_slice(b"ordres");
    let err = EnvelopeDecryptor::new(Arc::clone(&provider))
        .open_all(&changed)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Envelope(EnvelopeError::Kms { code, .. }) if code == "InvalidCiphertextException"
        ) || matches!(err, Error::Envelope(EnvelopeError::Authentication)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_s3_pipeline_file_decrypts_with_the_cli() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    let key = create_key(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sealed.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
type = "generator"
limit = 400

[query]
sql = "SELECT ticker_symbol, price FROM source"

[[sinks]]
type = "s3"
bucket = "{BUCKET}"
prefix = "sealed/"
compression = "gzip"
endpoint_url = "{endpoint}"
region = "us-east-1"

[sinks.encryption]
kms_key_id = "{key}"
endpoint_url = "{endpoint}"
region = "us-east-1"
"#,
            endpoint = moto.endpoint()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| cli_in(dir.path(), args);
    let out = cli(&["run", config.to_str().unwrap(), "--progress-interval", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let keys = keys_under(&moto, "sealed/");
    assert!(!keys.is_empty());
    let mut rows = 0;
    for k in &keys {
        assert!(k.ends_with(".json.gz.rve"), "{k}");
        let raw = s3::get_object(moto.port(), BUCKET, k);
        assert!(raw.starts_with(b"RVE\x01"), "an envelope");
        let url = format!("s3://{BUCKET}/{k}");
        let endpoint = moto.endpoint();
        let out = cli(&[
            "decrypt",
            &url,
            "--decompress",
            "--endpoint-url",
            &endpoint,
            "--region",
            "us-east-1",
            "--context",
            "rivulet:pipeline=sealed",
            "--context",
            "rivulet:stream=DESTINATION_SQL_STREAM",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                v["ticker_symbol"].is_string() && v["price"].is_number(),
                "{line}"
            );
            rows += 1;
        }
        let out = cli(&[
            "decrypt",
            &url,
            "--endpoint-url",
            &endpoint,
            "--region",
            "us-east-1",
            "--context",
            "rivulet:stream=other",
        ]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("encryption context mismatch"), "{stderr}");
    }
    assert_eq!(rows, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_uploaded_in_parts() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    let mut s = sink(&moto)
        .with_prefix("big/")
        .with_roll_bytes(64 << 20)
        .with_multipart_threshold(10 << 20)
        .build()
        .await
        .unwrap();
    // 12 MiB of rows: above the threshold, so three parts of 5 MiB or more.
    let text = "x".repeat(4000);
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("n", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("text", arrow::datatypes::DataType::Utf8, false),
    ]));
    let n = 3200;
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(0..n)),
            Arc::new(arrow::array::StringArray::from(vec![
                text.as_str();
                n as usize
            ])),
        ],
    )
    .unwrap();
    use rivulet::Sink as _;
    s.write(rivulet::OutputBatch::rows("s", batch))
        .await
        .unwrap();
    assert!(
        keys_under(&moto, "big/").is_empty(),
        "buffered until finished"
    );
    s.finish().await.unwrap();
    let keys = keys_under(&moto, "big/");
    assert_eq!(keys.len(), 1);
    let body = s3::get_object(moto.port(), BUCKET, &keys[0]);
    assert!(body.len() > 12 << 20, "{} bytes", body.len());
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), n as usize);
    let last: serde_json::Value = serde_json::from_slice(lines[lines.len() - 1]).unwrap();
    assert_eq!(last["n"], n - 1, "the parts are in order");
    // A multipart object's ETag ends with the number of parts.
    let etag = s3::head_object(moto.port(), BUCKET, &keys[0])
        .into_iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v)
        .unwrap();
    assert!(etag.trim_matches('"').ends_with("-3"), "ETag {etag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_copy_to_s3_holds_every_input_record_as_read() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let mut lines: Vec<String> = (0..500).map(|i| format!("{{\"id\":{i}}}")).collect();
    lines[7] = "not json at all".into();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let raw = sink(&moto)
        .with_name("raw")
        .with_prefix("rawStreamData/")
        .with_compression(Compression::Gzip)
        .build()
        .await
        .unwrap();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    let report = Pipeline::builder()
        .source(FileSource::builder(&input).build().unwrap())
        .format(RecordFormat::Json)
        .sql("SELECT id FROM source WHERE id >= 250")
        .sink(MemorySink::new())
        .raw_copy(raw)
        .error_output(errors)
        .build()
        .await
        .unwrap()
        .run()
        .await
        .expect("the pipeline runs");
    assert_eq!(report.metrics.records_error, 1);
    assert_eq!(
        error_rows.num_rows(),
        1,
        "the malformed record is in the error output"
    );

    let mut copied = Vec::new();
    for key in keys_under(&moto, "rawStreamData/") {
        assert!(key.ends_with(".json.gz"), "{key}");
        let body = s3::get_object(moto.port(), BUCKET, &key);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        copied.extend(text.lines().map(str::to_owned));
    }
    assert_eq!(
        copied, lines,
        "every record, malformed or filtered out, in order"
    );
}

#[cfg(feature = "wasm")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_modules_load_from_s3_in_the_api_and_in_pipeline_files() {
    let Some(module_path) = crate::wasm::built("haversine") else {
        return;
    };
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    s3::put_object(
        moto.port(),
        BUCKET,
        "udfs/haversine.wasm",
        &std::fs::read(&module_path).unwrap(),
    );
    let url = format!("s3://{BUCKET}/udfs/haversine.wasm");

    // Through the API, with an SDK configuration.
    let module = rivulet::wasm::WasmModule::load_s3(
        &url,
        &sdk_config(&moto),
        rivulet::wasm::WasmLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(module.functions()[0].name, "haversine_km");
    let missing = rivulet::wasm::WasmModule::load_s3(
        &format!("s3://{BUCKET}/udfs/none.wasm"),
        &sdk_config(&moto),
        rivulet::wasm::WasmLimits::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(missing.contains("udfs/none.wasm"), "{missing}");

    // Through a pipeline file run by the CLI (credentials from the environment).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.ndjson"),
        "{\"lat\":48.8566,\"lon\":2.3522}\n",
    )
    .unwrap();
    let config = dir.path().join("distance.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
type = "file"
path = "in.ndjson"

[query]
sql = "SELECT ROUND(haversine_km(lat, lon, 52.52, 13.405), 1) AS km FROM source"

[[udfs]]
path = "{url}"
endpoint_url = "{endpoint}"
region = "us-east-1"

[[sinks]]
type = "file"
path = "out.ndjson"
"#,
            endpoint = moto.endpoint()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", config.to_str().unwrap(), "--progress-interval", "0"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", dir.path())
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run rivulet");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.ndjson")).unwrap(),
        "{\"km\":877.5}\n"
    );
}

/// Decodes `%XX` escapes (RFC 3986), written here apart from the sink's encoder.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("a %XX escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_values_that_differ_only_in_slashes_land_in_distinct_objects() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    let mut s = sink(&moto)
        .with_prefix("paths/!{partitionKeyFromQuery:path}/")
        .build()
        .await
        .unwrap();
    let values = ["home", "/home", "home/", "a//b", "a/b", "50%", "a b"];
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("path", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("n", arrow::datatypes::DataType::Int64, false),
    ]));
    use rivulet::Sink as _;
    let mut n = 0;
    for v in values {
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(arrow::array::StringArray::from(vec![v, v])),
                Arc::new(arrow::array::Int64Array::from(vec![n, n + 1])),
            ],
        )
        .unwrap();
        n += 2;
        s.write(rivulet::OutputBatch::rows("s", batch))
            .await
            .unwrap();
    }
    s.finish().await.unwrap();
    // Listed and read back over plain HTTP: one object per value, under its decoded value.
    let keys = keys_under(&moto, "paths/");
    assert_eq!(keys.len(), values.len(), "{keys:?}");
    let mut rows = Vec::new();
    for key in &keys {
        let segment = key.split('/').nth(1).unwrap();
        let value = percent_decode(segment);
        let body = String::from_utf8(s3::get_object(moto.port(), BUCKET, key)).unwrap();
        for line in body.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(row["path"], value.as_str(), "{key}");
            rows.push(row["n"].as_i64().unwrap());
        }
    }
    rows.sort();
    assert_eq!(rows, (0..n).collect::<Vec<_>>(), "every row once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_throttling_is_retried_and_every_envelope_opens() {
    use crate::support::fault_proxy::{FaultProxy, Faults};
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let key = create_key(&moto).await;
    // Half of all GenerateDataKey and Decrypt calls throttled.
    let proxy = FaultProxy::start(
        moto.port(),
        Faults {
            kms_throttle: 0.5,
            seed: 3,
            ..Faults::default()
        },
    );
    let through = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&sdk_config(&moto))
            .endpoint_url(proxy.endpoint())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let provider: Arc<dyn KeyProvider> = Arc::new(KmsKeyProvider::with_client(through, key));
    // A new data key for every message: 20 GenerateDataKey calls.
    let mut enc = EnvelopeEncryptor::builder(Arc::clone(&provider))
        .with_limits(rivulet::crypto::DataKeyLimits {
            max_messages: 1,
            ..rivulet::crypto::DataKeyLimits::default()
        })
        .build()
        .unwrap();
    let mut sealed = Vec::new();
    for i in 0..20 {
        enc.seal(format!("{i}\n").as_bytes(), &mut sealed)
            .await
            .expect("a throttled GenerateDataKey is retried");
    }
    assert_eq!(enc.keys_generated(), 20);
    let mut dec = EnvelopeDecryptor::new(Arc::clone(&provider));
    let plain = String::from_utf8(dec.open_all(&sealed).await.unwrap()).unwrap();
    let want: String = (0..20).map(|i| format!("{i}\n")).collect();
    assert_eq!(plain, want);
    assert!(
        proxy.kms_throttled() >= 5,
        "{} throttled",
        proxy.kms_throttled()
    );

    // Retrying is bounded: with every call throttled, the failure comes back, saying so.
    let always = FaultProxy::start(
        moto.port(),
        Faults {
            kms_throttle: 1.0,
            ..Faults::default()
        },
    );
    let throttled = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&sdk_config(&moto))
            .endpoint_url(always.endpoint())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let provider = KmsKeyProvider::with_client(throttled, "any").with_max_attempts(3);
    let err = provider
        .generate_data_key(&Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ThrottlingException") && err.contains("after 3 attempts"),
        "{err}"
    );
    assert_eq!(always.kms_throttled(), 3);
}

/// A sink about to upload one object of `mib` MiB as a multipart upload when it finishes.
async fn sink_with_a_big_object(moto: &MotoServer, prefix: &str, mib: usize) -> S3Sink {
    use rivulet::Sink as _;
    let mut s = sink(moto)
        .with_prefix(prefix)
        .with_roll_bytes(256 << 20)
        .with_multipart_threshold(10 << 20)
        .build()
        .await
        .unwrap();
    let text = "y".repeat(4000);
    let n = (mib << 20) / 4000;
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("text", arrow::datatypes::DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::StringArray::from(vec![
            text.as_str();
            n
        ]))],
    )
    .unwrap();
    s.write(rivulet::OutputBatch::rows("s", batch))
        .await
        .unwrap();
    s
}

/// Waits until `bucket` has a multipart upload in progress under `prefix` (true), or none is
/// seen before the object exists (false: it completed too soon to be interrupted).
async fn upload_in_progress(moto: &MotoServer, prefix: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if s3::multipart_uploads(moto.port(), BUCKET)
            .iter()
            .any(|k| k.starts_with(prefix))
        {
            return true;
        }
        if !keys_under(moto, prefix).is_empty() {
            return false;
        }
        assert!(std::time::Instant::now() < deadline, "no upload started");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

async fn no_upload_left(moto: &MotoServer, prefix: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s3::multipart_uploads(moto.port(), BUCKET)
        .iter()
        .any(|k| k.starts_with(prefix))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the interrupted multipart upload is still open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_interrupted_by_cancellation_is_aborted() {
    use rivulet::Sink as _;
    let Some(moto) = MotoServer::start() else {
        return;
    };
    s3::create_bucket(moto.port(), BUCKET);
    // The uploading task is aborted (a second Ctrl-C, a task cancelled) in the middle.
    let mut interrupted = false;
    for attempt in 0..5 {
        let prefix = format!("cancelled-{attempt}/");
        let mut s = sink_with_a_big_object(&moto, &prefix, 60).await;
        let task = tokio::spawn(async move { s.finish().await });
        if !upload_in_progress(&moto, &prefix).await {
            continue;
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        no_upload_left(&moto, &prefix).await;
        assert!(keys_under(&moto, &prefix).is_empty());
        interrupted = true;
        break;
    }
    assert!(
        interrupted,
        "every upload completed before it could be interrupted"
    );

    // The process-wide abort (what the CLI does on a second Ctrl-C before it exits).
    let mut s = sink_with_a_big_object(&moto, "aborted/", 60).await;
    let task = tokio::spawn(async move { s.finish().await });
    if upload_in_progress(&moto, "aborted/").await {
        rivulet::s3::abort_uploads_in_progress().await;
        no_upload_left(&moto, "aborted/").await;
        let err = task.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("aborted"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_error_output_of_an_encrypting_pipeline_is_encrypted_too() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let key = create_key(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.ndjson"),
        "{\"n\":1,\"secret\":\"a\"}\nnot json, and secret\n{\"n\":2,\"secret\":\"b\"}\n",
    )
    .unwrap();
    let config = dir.path().join("quiet.toml");
    let endpoint = moto.endpoint();
    std::fs::write(
        &config,
        format!(
            r#"
[source]
type = "file"
path = "in.ndjson"

[format]
columns = [{{ name = "n", type = "BIGINT" }}, {{ name = "secret", type = "VARCHAR" }}]

[query]
sql = "SELECT n, secret FROM source"

[[sinks]]
type = "file"
path = "out.rve"

[sinks.encryption]
kms_key_id = "{key}"
endpoint_url = "{endpoint}"
region = "us-east-1"
"#
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| cli_in(dir.path(), args);
    let out = cli(&["run", config.to_str().unwrap(), "--progress-interval", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors = dir.path().join("processing-failed/quiet.ndjson");
    let sealed = std::fs::read(&errors).unwrap();
    assert!(
        sealed.starts_with(b"RVE\x01"),
        "the error output is envelopes"
    );
    assert!(
        !sealed.windows(6).any(|w| w == b"secret"),
        "no plaintext in the error output"
    );
    let out = cli(&[
        "decrypt",
        errors.to_str().unwrap(),
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
        "--context",
        "rivulet:stream=error_stream",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(rows[0]["errorCode"], "malformed");
}
