//! `rivulet setup` against moto on 127.0.0.1 (Kinesis, Firehose, S3, KMS, IAM, STS): apply from
//! one pipeline file, every resource read back through the AWS APIs, a second apply that changes
//! nothing, a changed file that updates only what changed, destroy that keeps what existed
//! before, and a pipeline running end to end on what setup created.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use serde_json::json;

use crate::support::moto::MotoServer;
use crate::support::s3;

const ACCOUNT: &str = "123456789012"; // moto's

fn sdk(moto: &MotoServer) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_kinesis::config::SharedCredentialsProvider::new(
            Credentials::new("test", "test", None, None, "tests"),
        ))
        .build()
}

/// `rivulet ARGS` with the emulator's credentials and nothing else from the environment.
fn rivulet(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"));
    cmd.args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", dir)
        .env_remove("AWS_PROFILE");
    cmd
}

fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = rivulet(dir, args).output().expect("run rivulet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &Path, endpoint: &str, shards: u32, interval: u32) -> PathBuf {
    let path = dir.join("ticker.toml");
    std::fs::write(
        &path,
        format!(
            r#"
name = "ticker"

[source]
type = "kinesis"
stream = "ticker-stream"
region = "us-east-1"
endpoint_url = "{endpoint}"
idle_poll_interval_ms = 200

[format]
type = "json"

[query]
sql = "SELECT ticker_symbol, price FROM source WHERE price > 10"

[[sinks]]
type = "firehose"
delivery_stream = "ticker-out"
region = "us-east-1"
endpoint_url = "{endpoint}"

[[sinks]]
type = "s3"
bucket = "existing-bucket"
prefix = "copies/"
region = "us-east-1"
endpoint_url = "{endpoint}"
roll_interval_ms = 200

[[sinks]]
type = "kinesis"
stream_name = "existing-out"
partition_key = "ticker_symbol"
region = "us-east-1"
endpoint_url = "{endpoint}"

[raw_copy]
type = "firehose"
delivery_stream = "ticker-raw"
region = "us-east-1"
endpoint_url = "{endpoint}"

[error_output]
type = "file"
path = "errors.ndjson"

[setup]
bucket = "ticker-analytics"
source_shards = {shards}
region = "us-east-1"
endpoint_url = "{endpoint}"
wait_timeout_secs = 60

[setup.delivery.ticker-out]
buffer_interval_secs = {interval}
compression = "GZIP"
"#
        ),
    )
    .unwrap();
    path
}

/// A policy document as IAM returns it (URL-encoded JSON, or JSON).
fn doc(text: &str) -> serde_json::Value {
    let decoded = if text.trim_start().starts_with('{') {
        text.to_owned()
    } else {
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    serde_json::from_str(&decoded).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_idempotent_updates_what_changed_and_destroy_keeps_what_existed() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let endpoint = moto.endpoint();
    let dir = tempfile::tempdir().unwrap();
    // A bucket and a stream that exist before setup: used, never changed or deleted.
    s3::create_bucket(moto.port(), "existing-bucket");
    let kinesis = aws_sdk_kinesis::Client::new(&sdk(&moto));
    kinesis
        .create_stream()
        .stream_name("existing-out")
        .shard_count(1)
        .send()
        .await
        .unwrap();
    let path = config(dir.path(), &endpoint, 2, 60);
    let p = path.to_str().unwrap();

    let (ok, plan, err) = cli(dir.path(), &["setup", "plan", p]);
    assert!(ok, "{err}");
    assert!(
        plan.contains("KMS key alias/rivulet-ticker") && plan.contains("create"),
        "{plan}"
    );
    for existing in ["S3 bucket existing-bucket", "Kinesis stream existing-out"] {
        assert!(
            plan.lines()
                .any(|l| l.contains(existing) && l.contains("left alone")),
            "{existing}: {plan}"
        );
    }
    assert!(
        plan.contains("\"Sid\": \"ReadSourceStream\""),
        "policies are printed: {plan}"
    );

    let (ok, out, err) = cli(dir.path(), &["setup", "apply", p]);
    assert!(ok, "{err}");
    assert!(
        out.contains("created Kinesis stream ticker-stream"),
        "{out}"
    );

    // Read back through the AWS APIs.
    let conf = sdk(&moto);
    let kms = aws_sdk_kms::Client::new(&conf);
    let key = kms
        .describe_key()
        .key_id("alias/rivulet-ticker")
        .send()
        .await
        .unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_owned();
    assert!(kms
        .get_key_rotation_status()
        .key_id(&key_arn)
        .send()
        .await
        .unwrap()
        .key_rotation_enabled());
    let key_policy = doc(kms
        .get_key_policy()
        .key_id(&key_arn)
        .policy_name("default")
        .send()
        .await
        .unwrap()
        .policy()
        .unwrap());
    let principals: Vec<&str> = key_policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Principal"]["AWS"].as_str().unwrap())
        .collect();
    assert_eq!(
        principals,
        [
            format!("arn:aws:iam::{ACCOUNT}:root"),
            format!("arn:aws:iam::{ACCOUNT}:root"),
            format!("arn:aws:iam::{ACCOUNT}:root"),
            format!("arn:aws:iam::{ACCOUNT}:role/rivulet-ticker-firehose-ticker-out"),
            format!("arn:aws:iam::{ACCOUNT}:role/rivulet-ticker-firehose-ticker-raw"),
            // Kinesis streams, then S3 objects.
            format!("arn:aws:iam::{ACCOUNT}:role/rivulet-ticker-runtime"),
            format!("arn:aws:iam::{ACCOUNT}:role/rivulet-ticker-runtime"),
        ]
    );

    let summary = kinesis
        .describe_stream_summary()
        .stream_name("ticker-stream")
        .send()
        .await
        .unwrap();
    let summary = summary.stream_description_summary().unwrap();
    assert_eq!(summary.open_shard_count(), 2);
    assert_eq!(
        summary.encryption_type(),
        Some(&aws_sdk_kinesis::types::EncryptionType::Kms)
    );
    assert_eq!(summary.key_id(), Some(key_arn.as_str()));

    let firehose = aws_sdk_firehose::Client::new(&conf);
    let describe = |name: &'static str| {
        let firehose = firehose.clone();
        async move {
            firehose
                .describe_delivery_stream()
                .delivery_stream_name(name)
                .send()
                .await
                .unwrap()
                .delivery_stream_description()
                .unwrap()
                .clone()
        }
    };
    let out_stream = describe("ticker-out").await;
    let s3d = out_stream.destinations()[0]
        .extended_s3_destination_description()
        .unwrap();
    assert_eq!(s3d.bucket_arn(), "arn:aws:s3:::ticker-analytics");
    assert_eq!(s3d.prefix(), Some("AggregatedData/"));
    assert_eq!(
        s3d.error_output_prefix(),
        Some("processing-failed/ticker-out/")
    );
    assert_eq!(s3d.compression_format().as_str(), "GZIP");
    let hints = s3d.buffering_hints().unwrap();
    assert_eq!(
        (hints.interval_in_seconds(), hints.size_in_mbs()),
        (Some(60), Some(5))
    );
    assert_eq!(
        s3d.role_arn(),
        format!("arn:aws:iam::{ACCOUNT}:role/rivulet-ticker-firehose-ticker-out")
    );
    let raw = describe("ticker-raw").await;
    let raw3 = raw.destinations()[0]
        .extended_s3_destination_description()
        .unwrap();
    assert_eq!(raw3.prefix(), Some("rawStreamData/"));
    let rh = raw3.buffering_hints().unwrap();
    assert_eq!(
        (rh.interval_in_seconds(), rh.size_in_mbs()),
        (Some(300), Some(10))
    );

    // The roles' policies, as IAM holds them.
    let iam = aws_sdk_iam::Client::new(&conf);
    let role_policy = |role: &'static str| {
        let iam = iam.clone();
        async move {
            doc(iam
                .get_role_policy()
                .role_name(role)
                .policy_name("rivulet")
                .send()
                .await
                .unwrap()
                .policy_document())
        }
    };
    let stream = format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/ticker-stream");
    assert_eq!(
        role_policy("rivulet-ticker-runtime").await,
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "ReadSourceStream", "Effect": "Allow",
                 "Action": ["kinesis:DescribeStreamSummary", "kinesis:GetRecords",
                            "kinesis:GetShardIterator", "kinesis:ListShards"],
                 "Resource": [stream]},
                {"Sid": "WriteDeliveryStreams", "Effect": "Allow",
                 "Action": ["firehose:PutRecord", "firehose:PutRecordBatch"],
                 "Resource": [format!("arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/ticker-out"),
                              format!("arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/ticker-raw")]},
                {"Sid": "WriteOutputStreams", "Effect": "Allow",
                 "Action": ["kinesis:PutRecord", "kinesis:PutRecords"],
                 "Resource": [format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/existing-out")]},
                {"Sid": "WriteObjects", "Effect": "Allow",
                 "Action": ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                 "Resource": ["arn:aws:s3:::existing-bucket/copies/*"]},
                {"Sid": "EncryptedStreams", "Effect": "Allow",
                 "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                 "Resource": [key_arn],
                 "Condition": {"StringEquals": {
                     "kms:ViaService": ["kinesis.us-east-1.amazonaws.com"],
                     "kms:EncryptionContext:aws:kinesis:arn": [
                         stream,
                         format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/existing-out")]}}},
                {"Sid": "EncryptedObjects", "Effect": "Allow",
                 "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                 "Resource": [key_arn],
                 "Condition": {
                     "StringEquals": {"kms:ViaService": ["s3.us-east-1.amazonaws.com"]},
                     "StringLike": {"kms:EncryptionContext:aws:s3:arn": ["arn:aws:s3:::existing-bucket/copies/*"]}}},
            ]
        })
    );
    assert_eq!(
        role_policy("rivulet-ticker-firehose-ticker-raw").await,
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "BucketLevel", "Effect": "Allow",
                 "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                 "Resource": ["arn:aws:s3:::ticker-analytics"]},
                {"Sid": "ObjectsUnderPrefixes", "Effect": "Allow",
                 "Action": ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                 "Resource": ["arn:aws:s3:::ticker-analytics/rawStreamData/*",
                              "arn:aws:s3:::ticker-analytics/processing-failed/ticker-raw/*"]},
                {"Sid": "EncryptObjectsThroughS3", "Effect": "Allow",
                 "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                 "Resource": [key_arn],
                 "Condition": {
                     "StringEquals": {"kms:ViaService": ["s3.us-east-1.amazonaws.com"]},
                     "StringLike": {"kms:EncryptionContext:aws:s3:arn": [
                         "arn:aws:s3:::ticker-analytics/rawStreamData/*",
                         "arn:aws:s3:::ticker-analytics/processing-failed/ticker-raw/*"]}}},
            ]
        })
    );
    let trust = doc(iam
        .get_role()
        .role_name("rivulet-ticker-firehose-ticker-out")
        .send()
        .await
        .unwrap()
        .role()
        .unwrap()
        .assume_role_policy_document()
        .unwrap());
    assert_eq!(
        trust["Statement"][0]["Condition"],
        json!({"StringEquals": {"sts:ExternalId": [ACCOUNT]}})
    );

    // A key policy statement naming a role allows on its own: each carries the actions and the
    // conditions of the role's IAM statement on the key, as KMS and IAM hold them.
    for role in [
        "rivulet-ticker-runtime",
        "rivulet-ticker-firehose-ticker-out",
        "rivulet-ticker-firehose-ticker-raw",
    ] {
        let principal = format!("arn:aws:iam::{ACCOUNT}:role/{role}");
        let in_key_policy: Vec<(serde_json::Value, serde_json::Value)> = key_policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Principal"]["AWS"] == principal.as_str())
            .map(|s| {
                assert_eq!(s["Resource"], json!(["*"]), "{role}: {s}");
                (s["Action"].clone(), s["Condition"].clone())
            })
            .collect();
        let in_iam: Vec<(serde_json::Value, serde_json::Value)> = role_policy(role).await
            ["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Resource"] == json!([key_arn]))
            .map(|s| (s["Action"].clone(), s["Condition"].clone()))
            .collect();
        assert!(!in_iam.is_empty(), "{role} uses the key");
        assert_eq!(in_key_policy, in_iam, "{role}");
        assert!(
            in_key_policy.iter().all(|(_, c)| c.is_object()),
            "{role}: {in_key_policy:?}"
        );
    }

    // A second apply changes nothing.
    let (ok, out, err) = cli(dir.path(), &["setup", "apply", p]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "nothing to change");

    // A changed file: only the shard count and the buffering change.
    config(dir.path(), &endpoint, 3, 120);
    let (ok, plan, err) = cli(dir.path(), &["setup", "plan", p]);
    assert!(ok, "{err}");
    let changing: Vec<&str> = plan
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| l.contains("update"))
        .collect();
    assert_eq!(changing.len(), 2, "{plan}");
    assert!(
        changing[0].contains("Kinesis stream ticker-stream"),
        "{plan}"
    );
    assert!(
        changing[1].contains("ticker-out") && changing[1].contains("buffering"),
        "{plan}"
    );
    let (ok, _, err) = cli(dir.path(), &["setup", "apply", p]);
    assert!(ok, "{err}");
    let summary = kinesis
        .describe_stream_summary()
        .stream_name("ticker-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary
            .stream_description_summary()
            .unwrap()
            .open_shard_count(),
        3
    );
    let out_stream = describe("ticker-out").await;
    let hints = out_stream.destinations()[0]
        .extended_s3_destination_description()
        .unwrap()
        .buffering_hints()
        .unwrap()
        .clone();
    assert_eq!(hints.interval_in_seconds(), Some(120));
    let (ok, out, _) = cli(dir.path(), &["setup", "apply", p]);
    assert!(ok && out.trim() == "nothing to change", "{out}");

    // The CloudFormation export needs no AWS.
    let (ok, template, err) = cli(
        dir.path(),
        &["setup", "export", p, "--format", "cloudformation"],
    );
    assert!(ok, "{err}");
    let t: serde_json::Value = serde_json::from_str(&template).unwrap();
    assert_eq!(
        t["Resources"]["StreamTickerStream"]["Properties"]["ShardCount"],
        3
    );

    // Destroy: what rivulet created goes; the bucket that existed stays.
    let (ok, out, err) = cli(dir.path(), &["setup", "destroy", p]);
    assert!(ok, "{err}");
    assert!(
        out.contains("deleted Kinesis stream ticker-stream"),
        "{out}"
    );
    assert!(kinesis
        .describe_stream_summary()
        .stream_name("ticker-stream")
        .send()
        .await
        .is_err());
    assert!(firehose
        .describe_delivery_stream()
        .delivery_stream_name("ticker-out")
        .send()
        .await
        .is_err());
    for role in [
        "rivulet-ticker-runtime",
        "rivulet-ticker-firehose-ticker-out",
        "rivulet-ticker-firehose-ticker-raw",
    ] {
        assert!(
            iam.get_role().role_name(role).send().await.is_err(),
            "{role}"
        );
    }
    let state = kms
        .describe_key()
        .key_id(&key_arn)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_state()
        .cloned();
    assert_eq!(state, Some(aws_sdk_kms::types::KeyState::PendingDeletion));
    assert!(
        out.contains("deleted S3 bucket ticker-analytics"),
        "empty: {out}"
    );
    // The pre-existing bucket and stream survive (listing a missing bucket fails).
    s3::list_keys(moto.port(), "existing-bucket");
    let existing = kinesis
        .describe_stream_summary()
        .stream_name("existing-out")
        .send()
        .await
        .unwrap();
    assert_eq!(
        existing
            .stream_description_summary()
            .unwrap()
            .encryption_type(),
        Some(&aws_sdk_kinesis::types::EncryptionType::None),
        "never changed"
    );
    let (ok, out, _) = cli(dir.path(), &["setup", "destroy", p]);
    assert!(ok && out.trim() == "nothing to remove", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_end_to_end_on_what_setup_created() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let endpoint = moto.endpoint();
    let dir = tempfile::tempdir().unwrap();
    s3::create_bucket(moto.port(), "existing-bucket");
    let path = config(dir.path(), &endpoint, 1, 60);
    let (ok, _, err) = cli(dir.path(), &["setup", "apply", path.to_str().unwrap()]);
    assert!(ok, "{err}");

    let kinesis = aws_sdk_kinesis::Client::new(&sdk(&moto));
    for i in 0..50 {
        kinesis
            .put_record()
            .stream_name("ticker-stream")
            .partition_key(format!("k{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                r#"{{"ticker_symbol":"T{i}","price":{}}}"#,
                i as f64
            )))
            .send()
            .await
            .unwrap();
    }
    let mut child = rivulet(
        dir.path(),
        &["run", path.to_str().unwrap(), "--progress-interval", "0"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Firehose (moto) writes what it receives into the bucket setup created.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut aggregated, mut raw) = (0, 0);
    while Instant::now() < deadline {
        let keys = s3::list_keys(moto.port(), "ticker-analytics");
        let count = |prefix: &str| -> usize {
            keys.iter()
                .filter(|k| k.starts_with(prefix))
                .map(|k| {
                    let body = s3::get_object(moto.port(), "ticker-analytics", k);
                    let body = rivulet::s3::decompress(body).unwrap();
                    String::from_utf8(body).unwrap().lines().count()
                })
                .sum()
        };
        aggregated = count("AggregatedData/");
        raw = count("rawStreamData/");
        if aggregated >= 39 && raw >= 50 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(aggregated, 39, "prices 11..49 pass the filter");
    assert_eq!(raw, 50, "the raw copy holds every record");
    // The bucket holds data now: destroy keeps it.
    let (ok, out, err) = cli(dir.path(), &["setup", "destroy", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("kept S3 bucket ticker-analytics"), "{out}");
    assert!(
        out.contains("kept KMS key alias/rivulet-ticker"),
        "its data stays readable: {out}"
    );
    assert!(!s3::list_keys(moto.port(), "ticker-analytics").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redshift_destination_is_created_with_its_s3_staging_and_kept_as_planned() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let endpoint = moto.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loads.toml");
    std::fs::write(
        &path,
        format!(
            r#"
name = "loads"

[source]
type = "generator"
limit = 10

[[sinks]]
type = "firehose"
delivery_stream = "loads-redshift"
region = "us-east-1"
endpoint_url = "{endpoint}"

[setup]
bucket = "loads-staging"
encryption = false
region = "us-east-1"
endpoint_url = "{endpoint}"

[setup.delivery.loads-redshift]
destination = "redshift"
jdbc_url = "jdbc:redshift://cluster.example:5439/analytics"
table = "ticker"
columns = "ticker_symbol,price"
username = "loader"
password_env = "LOADS_REDSHIFT_PASSWORD"
copy_options = "JSON 'auto'"
prefix = "staging/"
"#
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = rivulet(dir.path(), args)
            .env("LOADS_REDSHIFT_PASSWORD", "s3cret-Passw0rd")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let p = path.to_str().unwrap();
    let plan = run(&["setup", "plan", p]);
    assert!(
        !plan.contains("KMS key"),
        "no key without encryption: {plan}"
    );
    run(&["setup", "apply", p]);
    let d = aws_sdk_firehose::Client::new(&sdk(&moto))
        .describe_delivery_stream()
        .delivery_stream_name("loads-redshift")
        .send()
        .await
        .unwrap();
    let dest = &d.delivery_stream_description().unwrap().destinations()[0];
    let r = dest.redshift_destination_description().unwrap();
    assert_eq!(
        r.cluster_jdbcurl(),
        "jdbc:redshift://cluster.example:5439/analytics"
    );
    assert_eq!(r.username(), Some("loader"));
    let copy = r.copy_command().unwrap();
    assert_eq!(copy.data_table_name(), "ticker");
    assert_eq!(copy.data_table_columns(), Some("ticker_symbol,price"));
    let staging = r.s3_destination_description().unwrap();
    assert_eq!(staging.bucket_arn(), "arn:aws:s3:::loads-staging");
    assert_eq!(staging.prefix(), Some("staging/"));
    assert_eq!(run(&["setup", "apply", p]).trim(), "nothing to change");
    run(&["setup", "destroy", p]);
}
