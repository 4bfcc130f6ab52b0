//! Pipeline files: parsing, checks and what they build.

use super::*;

fn parse(text: &str) -> Result<PipelineConfig> {
    PipelineConfig::from_toml_str(text, ".")
}

const SINK: &str = "\n[[sinks]]\ntype = \"stdout\"\n";

#[test]
fn when_a_sink_encrypts_the_error_output_and_raw_copy_do_too_or_are_refused() {
    let source = "[source]\ntype = \"generator\"\nlimit = 1\n";
    let encrypted_file = "[[sinks]]\ntype = \"file\"\npath = \"out.rve\"\n\
                          [sinks.encryption]\nkms_key_id = \"alias/k\"\n";
    // The default error output (a local file here) takes the sink's encryption.
    let c = parse(&format!("{source}{encrypted_file}")).unwrap();
    let errors = c.error_output_config();
    assert!(matches!(errors, SinkConfig::File { .. }), "{errors:?}");
    assert_eq!(errors.encryption().unwrap().kms_key_id, "alias/k");
    // So does the default in the bucket of an unencrypted S3 sink next to an encrypted one.
    let c = parse(&format!(
        "{source}[[sinks]]\ntype = \"s3\"\nbucket = \"b\"\n{encrypted_file}"
    ))
    .unwrap();
    let errors = c.error_output_config();
    assert!(matches!(errors, SinkConfig::S3 { .. }), "{errors:?}");
    assert_eq!(errors.encryption().unwrap().kms_key_id, "alias/k");
    // An explicit error output or raw copy in clear is refused, saying why.
    for (table, key) in [
        (
            "[error_output]\ntype = \"file\"\npath = \"e.ndjson\"\n",
            "error_output",
        ),
        ("[error_output]\ntype = \"stderr\"\n", "error_output"),
        ("[raw_copy]\ntype = \"file\"\npath = \"raw\"\n", "raw_copy"),
    ] {
        let err = parse(&format!("{source}{encrypted_file}{table}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && err.contains("sinks[0] encrypts") && err.contains("in clear"),
            "{err}"
        );
    }
    // Encrypted, they are accepted; without an encrypting sink, nothing is required.
    parse(&format!(
        "{source}{encrypted_file}[raw_copy]\ntype = \"file\"\npath = \"raw\"\n\
         [raw_copy.encryption]\nkms_key_id = \"alias/k\"\n"
    ))
    .unwrap();
    let c = parse(&format!(
        "{source}[[sinks]]\ntype = \"stdout\"\n[error_output]\ntype = \"stderr\"\n"
    ))
    .unwrap();
    assert!(c.error_output_config().encryption().is_none());
}

#[test]
fn minimal_generator_config() {
    let c = parse(&format!(
        "[source]\ntype = \"generator\"\nlimit = 10\n{SINK}"
    ))
    .unwrap();
    assert!(matches!(
        c.source,
        SourceConfig::Generator {
            limit: Some(10),
            ..
        }
    ));
}

#[tokio::test]
async fn windows_settings_and_sink_streams() {
    let text = "[source]\ntype = \"generator\"\nlimit = 100\nstart_time_ms = 0\n\
         [format]\nrowtime = \"event_time\"\n\
         [query]\nsql = \"INSERT INTO tech SELECT ticker_symbol, ROWTIME AS t FROM source; \
         SELECT COUNT(*) AS n FROM tech GROUP BY TUMBLE(t, INTERVAL '1' SECOND)\"\n\
         allowed_lateness_ms = 250\nidle_timeout_ms = 5000\n\
         [[sinks]]\ntype = \"stdout\"\n\
         [[sinks]]\ntype = \"stderr\"\nstream = \"tech\"\n";
    let c = parse(text).unwrap();
    assert_eq!(c.query.allowed_lateness_ms, 250);
    assert_eq!(c.query.idle_timeout_ms, 5000);
    let p = c.build().await.unwrap();
    assert_eq!(
        p.program().watermark_settings().allowed_lateness,
        Duration::from_millis(250)
    );
    let wrong = text.replace("stream = \"tech\"", "stream = \"nope\"");
    let err = parse(&wrong)
        .unwrap()
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sinks") && err.contains("nope") && err.contains("tech"),
        "{err}"
    );
}

#[test]
fn errors_name_the_offending_key() {
    #[cfg_attr(not(feature = "aws"), allow(unused_mut))]
    let mut cases: Vec<(String, &str)> = [
        ("[source]\ntype = \"generator\"\nrat = 5\n", "rat"),
        ("[source]\ntype = \"generator\"\nrate = -1\n", "source.rate"),
        ("[source]\ntype = \"kafka\"\n", "kafka"),
        (
            "[source]\ntype = \"generator\"\n[format]\ncolumns = [{ name = \"a\", type = \"VARCHR\" }]\n",
            "format.columns[0].type",
        ),
        (
            "[source]\ntype = \"generator\"\n[format]\ncolumns = [{ name = \"a\", type = \"INT\", path = \"a.b\" }]\n",
            "format.columns[0].path",
        ),
        ("[source]\ntype = \"generator\"\n[format]\ndelimiter = \";\"\n", "format.delimiter"),
        ("[source]\ntype = \"generator\"\n[batch]\nmax_rows = 0\n", "batch.max_rows"),
        ("[source]\ntype = \"generator\"\n[runtime]\nworkers = 0\n", "runtime.workers"),
        ("[source]\ntype = \"generator\"\n[runtime]\nthreads = 2\n", "threads"),
        ("[source]\ntype = \"file\"\npath = \"/nonexistent/in.ndjson\"\n", "source.path"),
        (
            "[source]\ntype = \"generator\"\n[checkpoint]\npath = \"cp\"\ninterval_ms = 0\n",
            "checkpoint.interval_ms",
        ),
    ]
    .into_iter()
    .map(|(text, key)| (text.to_owned(), key))
    .collect();
    #[cfg(feature = "aws")]
    {
        let k = "[source]\ntype = \"kinesis\"\nstream = \"s\"\n";
        for (extra, key) in [
            (
                "start_position = \"at_timestamp\"\n",
                "source.start_timestamp",
            ),
            (
                "start_position = \"at_timestamp\"\nstart_timestamp = \"yesterday\"\n",
                "source.start_timestamp",
            ),
            ("start_timestamp = 5\n", "source.start_timestamp"),
            ("start_position = \"earliest\"\n", "earliest"),
            ("poll_interval_ms = 50\n", "source.poll_interval_ms"),
            ("max_records = 20000\n", "source.max_records"),
            ("shards = 2\n", "shards"),
        ] {
            cases.push((format!("{k}{extra}"), key));
        }
        let s3 = "[[sinks]]\ntype = \"s3\"\nbucket = \"b\"\n";
        cases.push((
            format!("[source]\ntype = \"generator\"\n{s3}{s3}"),
            "sinks[1].name",
        ));
        cases.push((
            format!("[source]\ntype = \"generator\"\n{s3}bucket2 = 1\n"),
            "bucket2",
        ));
    }
    for (text, key) in cases {
        let err = parse(&format!("{text}{SINK}")).unwrap_err().to_string();
        assert!(err.contains(key), "expected `{key}` in: {err}");
    }
    let err = parse("[source]\ntype = \"generator\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sinks"), "{err}");
    let err = parse(&format!(
        "[source]\ntype = \"generator\"\n{SINK}\n[[sinks]]\ntype = \"file\"\npath = \"x\"\nroll_bytes = 0\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("sinks[1].roll_bytes"), "{err}");
}

#[tokio::test]
async fn invalid_sql_is_reported_against_query_sql() {
    let c = parse(&format!(
        "[source]\ntype = \"generator\"\nlimit = 5\n[query]\nsql = \"SELECT COUNT(*) FROM source\"\n{SINK}"
    ))
    .unwrap();
    let err = c.build().await.unwrap_err().to_string();
    assert!(err.contains("query.sql"), "{err}");
}
