//! WASM record transforms: the `clean_logs` example built from `udfs/` against its native build,
//! through a pipeline file with the error output checked, and a trapping transform contained.

use arrow::array::{AsArray, RecordBatch};
use base64::Engine as _;
use rivulet::wasm::{WasmLimits, WasmModule};
use rivulet::{
    FileSource, MemorySink, Pipeline, Record, RecordFormat, RecordTransform, Transformed,
};

use super::wasm::{built, repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_logs_in_wasm_equals_the_native_transform_on_random_records() {
    let Some(path) = built("clean_logs") else {
        return;
    };
    let module = WasmModule::load(path.to_str().unwrap(), WasmLimits::default())
        .await
        .unwrap();
    let transform = module.transform("clean_logs").unwrap();
    assert!(
        module.scalar("clean_logs").is_err(),
        "a transform is not a scalar function"
    );
    let pieces = [
        "{",
        "}",
        "\"level\"",
        ":",
        " ",
        "\"debug\"",
        "\"info\"",
        "\"password\"",
        "\"token\"",
        "\"x\"",
        ",",
        "\\\"",
        "é",
        "\"",
        "trace",
        "TRACE",
        "secret",
        "\"level\":\"debug\"",
        "\"level\": \"TRACE\"",
    ];
    let mut rng = fastrand::Rng::with_seed(17);
    let records: Vec<Record> = (0..3000)
        .map(|_| {
            let mut s = String::new();
            if rng.u8(..10) > 0 {
                s.push('{');
            }
            for _ in 0..rng.usize(0..14) {
                s.push_str(pieces[rng.usize(..pieces.len())]);
            }
            let mut bytes = s.into_bytes();
            if rng.u8(..50) == 0 {
                bytes.push(0xff); // not UTF-8
            }
            Record::new(bytes.into(), 0)
        })
        .collect();
    let got = transform.transform(&records).unwrap();
    assert_eq!(got.len(), records.len());
    let mut seen = [0usize; 3];
    for (r, g) in records.iter().zip(&got) {
        let want = match clean_logs::clean_logs(r.payload()) {
            rivulet_udf::Transformed::Ok(b) => Transformed::Ok(b.into()),
            rivulet_udf::Transformed::Unchanged => Transformed::Ok(r.payload().clone()),
            rivulet_udf::Transformed::Dropped => Transformed::Dropped,
            rivulet_udf::Transformed::Failed(m) => Transformed::ProcessingFailed(m),
        };
        seen[match &want {
            Transformed::Ok(_) => 0,
            Transformed::Dropped => 1,
            _ => 2,
        }] += 1;
        assert_eq!(g, &want, "{:?}", String::from_utf8_lossy(r.payload()));
    }
    assert!(
        seen.iter().all(|&n| n > 50),
        "every outcome occurs: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_file_transforms_records_before_decoding_with_failures_in_the_error_output() {
    let Some(path) = built("clean_logs") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        r#"{"level":"info","user":"ann","password":"hunter2"}"#,
        r#"{"level":"debug","user":"bob"}"#,
        r#"GET /index.html 200"#,
        r#"{"level":"warn","user":"cy","token":"abc"}"#,
        r#"{"level":"trace","user":"dee"}"#,
        r#"{"level":"error","user":"eve"}"#,
    ];
    std::fs::write(dir.path().join("in.ndjson"), lines.join("\n") + "\n").unwrap();
    let config = dir.path().join("logs.toml");
    let toml = format!(
        r#"
transform = "clean_logs"

[source]
type = "file"
path = "in.ndjson"

[query]
sql = "SELECT level, \"user\", password, token FROM source"

[[udfs]]
path = "{}"

[[sinks]]
type = "file"
path = "out.ndjson"

[error_output]
type = "file"
path = "errors.ndjson"
"#,
        path.display()
    );
    std::fs::write(&config, &toml).unwrap();
    let report = rivulet::PipelineConfig::from_file(&config)
        .unwrap()
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.metrics.records_in, 6);
    assert_eq!(report.metrics.records_error, 1);
    assert_eq!(report.metrics.records_dropped, 2);
    let out: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("out.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        out,
        vec![
            serde_json::json!({"level":"info","user":"ann","password":"***","token":null}),
            serde_json::json!({"level":"warn","user":"cy","password":null,"token":"***"}),
            serde_json::json!({"level":"error","user":"eve","password":null,"token":null}),
        ],
        "debug and trace lines dropped, secrets redacted, the rest unchanged"
    );
    let errors: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("errors.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["errorCode"], "processing_failed");
    assert_eq!(errors[0]["stage"], "transform");
    assert_eq!(errors[0]["errorMessage"], "the record is not a JSON object");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(errors[0]["rawData"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, lines[2].as_bytes(), "the record as it was read");

    // A transform that no module has is refused, naming what there is.
    std::fs::write(&config, toml.replace("\"clean_logs\"\n", "\"clean\"\n")).unwrap();
    let err = rivulet::PipelineConfig::from_file(&config)
        .unwrap()
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("transform") && err.contains("clean_logs"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_transform_fails_only_its_batch_and_the_next_batch_runs() {
    let text = std::fs::read(repo().join("udfs/hostile/transform_trap.wat")).unwrap();
    let module = WasmModule::from_bytes("transform_trap", &text, WasmLimits::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    // Batch 3 (records 21..=30) holds a record starting with `!`: the guest traps on it.
    let input: String = (1..=100)
        .map(|i| {
            if i == 25 {
                "!{\"x\":25}\n".to_owned()
            } else {
                format!("{{\"x\":{i}}}\n")
            }
        })
        .collect();
    std::fs::write(&path, input).unwrap();
    let out = MemorySink::new();
    let rows = out.handle();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    Pipeline::builder()
        .source(FileSource::builder(&path).build().unwrap())
        .format(RecordFormat::Json)
        .transform(module.transform("t").unwrap())
        .sink(out)
        .error_output(errors)
        .batch_settings(rivulet::BatchSettings {
            max_rows: 10,
            ..rivulet::BatchSettings::default()
        })
        .build()
        .await
        .unwrap()
        .run()
        .await
        .expect("the pipeline keeps running");
    let ok: usize = rows.batches().iter().map(RecordBatch::num_rows).sum();
    assert_eq!(ok, 90);
    let errs = error_rows.batches();
    let failed: usize = errs.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(failed, 10, "the whole batch of the trap");
    for b in &errs {
        let code = b.column_by_name("errorCode").unwrap().as_string::<i32>();
        let msg = b.column_by_name("errorMessage").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            assert_eq!(code.value(i), "transform_failed");
            assert!(msg.value(i).contains("unreachable"), "{}", msg.value(i));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transforms_failure_message_is_cut_to_a_kilobyte() {
    // Every record is marked ProcessingFailed with a message of 1 MiB.
    let text = std::fs::read(repo().join("udfs/hostile/huge_failure.wat")).unwrap();
    let module = WasmModule::from_bytes("huge_failure", &text, WasmLimits::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    let input: String = (1..=40).map(|i| format!("{{\"x\":{i}}}\n")).collect();
    std::fs::write(&path, input).unwrap();
    let out = MemorySink::new();
    let rows = out.handle();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    Pipeline::builder()
        .source(FileSource::builder(&path).build().unwrap())
        .format(RecordFormat::Json)
        .columns(vec![rivulet::Column::new(
            "x",
            arrow::datatypes::DataType::Int64,
        )])
        .transform(module.transform("t").unwrap())
        .sink(out)
        .error_output(errors)
        .batch_settings(rivulet::BatchSettings {
            max_rows: 10,
            ..rivulet::BatchSettings::default()
        })
        .build()
        .await
        .unwrap()
        .run()
        .await
        .expect("the pipeline keeps running");
    assert_eq!(
        rows.batches()
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        0
    );
    let errs = error_rows.batches();
    assert_eq!(errs.iter().map(RecordBatch::num_rows).sum::<usize>(), 40);
    for b in &errs {
        let code = b.column_by_name("errorCode").unwrap().as_string::<i32>();
        let msg = b.column_by_name("errorMessage").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            assert_eq!(code.value(i), "processing_failed");
            let m = msg.value(i);
            assert!(m.len() < 1200, "a message of {} bytes", m.len());
            assert!(m.contains("xxxx"), "{m}");
            assert!(m.contains("1048576 bytes in all"), "{m}");
        }
    }
}
