//! Kinesis Data Analytics application files through `rivulet replay --app`: KDA's
//! DescribeApplication output (JSON, nested mappings) and the original solution's YAML (CSV).

use std::path::PathBuf;

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kda")
        .join(name)
        .display()
        .to_string()
}

fn replay(args: &[&str]) -> (bool, Vec<serde_json::Value>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .arg("replay")
        .args(args)
        .output()
        .expect("run rivulet");
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.success(),
        rows,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn describe_application_output_runs_with_its_input_schema_and_code() {
    let (ok, rows, err) = replay(&[
        "--app",
        &data("describe_application.json"),
        "--input",
        &data("ticker.ndjson"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"TICKER_SYMBOL": "AMZN", "SECTOR": "TECHNOLOGY", "PRICE": 120.5}),
            // VARCHAR(4) cuts MSFTX; PRICE comes from the nested $.quote.price.
            serde_json::json!({"TICKER_SYMBOL": "MSFT", "SECTOR": "TECHNOLOGY", "PRICE": 300.25}),
        ]
    );
}

#[test]
fn the_original_solutions_yaml_runs_its_sample_application_on_csv() {
    let (ok, rows, err) = replay(&[
        "--app",
        &data("original_solution.yaml"),
        "--input",
        &data("cars.csv"),
        "--rowtime",
        "ts",
    ]);
    assert!(ok, "{err}");
    let summary: Vec<(String, i64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["CAR"].as_str().unwrap().to_owned(),
                r["VEHICLE_COUNT"].as_i64().unwrap(),
                r["AVG_TEMP"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("A".to_owned(), 2, 85.0),
            ("B".to_owned(), 1, 100.0),
            ("A".to_owned(), 1, 70.0),
            ("B".to_owned(), 2, 55.0),
        ]
    );
}

#[test]
fn an_application_file_without_code_needs_sql_and_a_bad_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.yaml");
    std::fs::write(
        &schema,
        "RecordColumns:\n  - {Name: TICKER_SYMBOL, SqlType: VARCHAR(4), Mapping: $.ticker_symbol}\n",
    )
    .unwrap();
    let (ok, _, err) = replay(&[
        "--app",
        schema.to_str().unwrap(),
        "--input",
        &data("ticker.ndjson"),
    ]);
    assert!(!ok && err.contains("--sql"), "{err}");
    let sql = dir.path().join("app.sql");
    std::fs::write(
        &sql,
        "CREATE OR REPLACE STREAM \"DESTINATION_SQL_STREAM\" (t VARCHAR(4));\n\
         CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"DESTINATION_SQL_STREAM\" \
         SELECT STREAM ticker_symbol FROM \"SOURCE_SQL_STREAM_001\";",
    )
    .unwrap();
    let (ok, rows, err) = replay(&[
        "--app",
        schema.to_str().unwrap(),
        "--sql",
        sql.to_str().unwrap(),
        "--input",
        &data("ticker.ndjson"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3]["T"], "MSFT");

    std::fs::write(&schema, "InputFormatType: AVRO\ncolumns: []\n").unwrap();
    let (ok, _, err) = replay(&[
        "--app",
        schema.to_str().unwrap(),
        "--input",
        &data("ticker.ndjson"),
    ]);
    assert!(
        !ok && err.contains("schema.yaml") && err.contains("AVRO"),
        "{err}"
    );
}

#[test]
fn a_pipeline_file_runs_a_kda_application_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cars.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
type = "file"
path = "{cars}"

[format]
rowtime = "ts"

[query]
application = "{app}"

[[sinks]]
type = "file"
path = "out.ndjson"
"#,
            cars = data("cars.csv"),
            app = data("original_solution.yaml")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", config.to_str().unwrap(), "--progress-interval", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = std::fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    assert_eq!(rows.lines().count(), 4, "{rows}");
    assert!(rows.contains(r#""CAR":"B","VEHICLE_COUNT":2"#), "{rows}");
}

#[test]
fn discovered_schemas_load_back_as_application_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "discover-schema",
            "--input",
            &data("ticker.ndjson"),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let columns = &schema["InputSchema"]["RecordColumns"];
    assert_eq!(
        columns[3],
        serde_json::json!({"Name": "quote_price", "SqlType": "REAL", "Mapping": "$.quote.price"})
    );
    assert_eq!(columns[0]["SqlType"], "VARCHAR(5)", "the longest symbol");
    let path = dir.path().join("schema.json");
    std::fs::write(&path, &out.stdout).unwrap();
    let sql = dir.path().join("app.sql");
    std::fs::write(
        &sql,
        "CREATE OR REPLACE STREAM \"DESTINATION_SQL_STREAM\" (t VARCHAR(8), p DOUBLE);\n\
         CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"DESTINATION_SQL_STREAM\" \
         SELECT STREAM \"ticker_symbol\", \"quote_price\" FROM \"SOURCE_SQL_STREAM_001\" \
         WHERE \"change\" > 0;",
    )
    .unwrap();
    let (ok, rows, err) = replay(&[
        "--app",
        path.to_str().unwrap(),
        "--sql",
        sql.to_str().unwrap(),
        "--input",
        &data("ticker.ndjson"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"T": "AMZN", "P": 120.5}),
            serde_json::json!({"T": "QXZ", "P": 12.0}),
            serde_json::json!({"T": "MSFTX", "P": 300.25}),
        ]
    );
}

#[test]
fn a_kda_applications_errors_carry_the_error_stream_columns() {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("app.sql");
    std::fs::write(
        &sql,
        "CREATE OR REPLACE STREAM \"DATES\" (d VARCHAR(16));\n\
         CREATE OR REPLACE STREAM \"DESTINATION_SQL_STREAM\" (t TIMESTAMP);\n\
         CREATE OR REPLACE PUMP \"PARSE_PUMP\" AS INSERT INTO \"DESTINATION_SQL_STREAM\" \
         SELECT STREAM CHAR_TO_TIMESTAMP('yyyy-MM-dd', d) FROM \"DATES\";\n\
         CREATE OR REPLACE PUMP \"COPY_PUMP\" AS INSERT INTO \"DATES\" \
         SELECT STREAM \"d\" FROM \"SOURCE_SQL_STREAM_001\";",
    )
    .unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, "{\"d\": \"2026-01-27\"}\n{\"d\": \"27/01/2026\"}\n").unwrap();
    let out_dir = dir.path().join("out");
    let (ok, _, err) = replay(&[
        "--sql",
        sql.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let rows = std::fs::read_to_string(out_dir.join("DESTINATION_SQL_STREAM.ndjson")).unwrap();
    assert_eq!(rows.lines().count(), 1, "{rows}");
    let errors: Vec<serde_json::Value> =
        std::fs::read_to_string(out_dir.join("error_stream.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e["ERROR_LEVEL"], "ERROR");
    assert_eq!(e["ERROR_NAME"], e["errorCode"]);
    assert!(
        e["MESSAGE"]
            .as_str()
            .unwrap()
            .contains("does not match the format"),
        "{e}"
    );
    // KDA's DATA_ROW: the record, hex-encoded.
    let hex: String = "{\"d\": \"27/01/2026\"}"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(e["DATA_ROW"], hex.as_str());
    assert!(
        e["ERROR_TIME"].is_string() && e["DATA_ROWTIME"].is_string(),
        "{e}"
    );
    assert_eq!(e["PUMP_NAME"], "PARSE_PUMP", "{e}");
    assert_eq!(e["statement"], "PARSE_PUMP", "{e}");
}

#[test]
fn a_reference_table_from_a_file_joins_the_stream_in_a_pump() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.sql"),
        "CREATE OR REPLACE STREAM \"DESTINATION_SQL_STREAM\" (sym VARCHAR(8), company VARCHAR(16), price DOUBLE);\n\
         CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"DESTINATION_SQL_STREAM\"\n\
         SELECT STREAM s.\"ticker_symbol\", c.\"company\", s.\"quote\"['price']\n\
         FROM \"SOURCE_SQL_STREAM_001\" AS s LEFT JOIN \"companies\" AS c ON s.\"ticker_symbol\" = c.\"ticker\";",
    )
    .unwrap();
    let config = dir.path().join("enrich.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
type = "file"
path = "{input}"

[query]
sql_file = "app.sql"

[[reference]]
name = "companies"
path = "{companies}"

[[sinks]]
type = "file"
path = "out.ndjson"
"#,
            input = data("ticker.ndjson"),
            companies = data("companies.csv"),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", config.to_str().unwrap(), "--progress-interval", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("out.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r["SYM"].as_str().unwrap().to_owned(),
                r["COMPANY"].as_str().map(str::to_owned),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("AMZN".to_owned(), Some("Amazon".to_owned())),
            ("MSFTX".to_owned(), Some("Microsoft".to_owned())),
            ("QXZ".to_owned(), None),
            ("XOM".to_owned(), None),
        ]
    );
}

#[test]
fn an_applications_reference_table_is_typed_by_its_reference_schema() {
    let dir = tempfile::tempdir().unwrap();
    // As DescribeApplication gives it: the table's S3 file and a CSV schema without mappings.
    let app = serde_json::json!({"ApplicationDetail": {
        "ApplicationCode": "CREATE OR REPLACE STREAM \"DESTINATION_SQL_STREAM\" \
            (ticker VARCHAR(4), company VARCHAR(20), shares BIGINT);\n\
            CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"DESTINATION_SQL_STREAM\"\n\
            SELECT STREAM s.ticker_symbol, c.company, c.shares * 2\n\
            FROM \"SOURCE_SQL_STREAM_001\" AS s JOIN \"Companies\" AS c ON s.ticker_symbol = c.ticker;",
        "InputDescriptions": [{"NamePrefix": "SOURCE_SQL_STREAM", "InputSchema": {
            "RecordFormat": {"RecordFormatType": "JSON",
                "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
            "RecordColumns": [{"Name": "TICKER_SYMBOL", "SqlType": "VARCHAR(4)", "Mapping": "$.t"}]}}],
        "ReferenceDataSourceDescriptions": [{"ReferenceId": "2.1", "TableName": "Companies",
            "S3ReferenceDataSourceDescription": {"BucketARN": "arn:aws:s3:::ref-bucket",
                "FileKey": "companies.csv", "ReferenceRoleARN": "arn:aws:iam::123456789012:role/r"},
            "ReferenceSchema": {
                "RecordFormat": {"RecordFormatType": "CSV", "MappingParameters": {
                    "CSVMappingParameters": {"RecordRowDelimiter": "\n", "RecordColumnDelimiter": ";"}}},
                "RecordColumns": [
                    {"Name": "TICKER", "SqlType": "VARCHAR(4)"},
                    {"Name": "COMPANY", "SqlType": "VARCHAR(20)"},
                    {"Name": "SHARES", "SqlType": "BIGINT"}]}}]}});
    let app_path = dir.path().join("app.json");
    std::fs::write(&app_path, app.to_string()).unwrap();
    let app_text = std::fs::read_to_string(&app_path).unwrap();
    let parsed = rivulet::KdaApplication::parse(&app_text).unwrap();
    assert_eq!(parsed.references.len(), 1);
    assert_eq!(
        parsed.references[0].location.as_deref(),
        Some("s3://ref-bucket/companies.csv")
    );
    let input = dir.path().join("in.ndjson");
    std::fs::write(
        &input,
        "{\"t\": \"AMZN\"}\n{\"t\": \"XOM\"}\n{\"t\": \"ZZZ\"}\n",
    )
    .unwrap();
    // The file as downloaded from the bucket, with a header row or without: its columns typed
    // by the schema (SHARES a number, so doubled), whatever inference would have made of them.
    for (file, text) in [
        (
            "with_header.csv",
            "ticker;company;shares\nAMZN;Amazon;0010\nXOM;Exxon;7\n",
        ),
        ("without_header.csv", "AMZN;Amazon;0010\nXOM;Exxon;7\n"),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let (ok, rows, err) = replay(&[
            "--app",
            app_path.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--reference",
            &format!("Companies={}", path.display()),
        ]);
        assert!(ok, "{file}: {err}");
        assert_eq!(
            rows,
            vec![
                serde_json::json!({"TICKER": "AMZN", "COMPANY": "Amazon", "SHARES": 20}),
                serde_json::json!({"TICKER": "XOM", "COMPANY": "Exxon", "SHARES": 14}),
            ],
            "{file}"
        );
    }
    // A row that does not fit the schema is an error naming the table and the row.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "AMZN;Amazon;many\n").unwrap();
    let (ok, _, err) = replay(&[
        "--app",
        app_path.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--reference",
        &format!("Companies={}", bad.display()),
    ]);
    assert!(
        !ok && err.contains("Companies") && err.contains("row 1"),
        "{err}"
    );
}

#[tokio::test]
async fn a_parsed_row_read_column_by_column_belongs_to_its_own_batch() {
    use arrow::array::{AsArray, RecordBatch, StringArray};
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("log", arrow::datatypes::DataType::Utf8, true),
    ]));
    let code = "CREATE OR REPLACE STREAM \"D\" (host VARCHAR(16), status VARCHAR(4));\n\
                CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"D\" SELECT STREAM t.r.COLUMN1, t.r.COLUMN6 \
                FROM (SELECT STREAM W3C_LOG_PARSE(\"log\", 'COMMON') AS r FROM SOURCE_SQL_STREAM_001) AS t;";
    let mut program = rivulet::SqlProgram::new(
        code,
        std::sync::Arc::clone(&schema),
        rivulet::WatermarkSettings::default(),
    )
    .await
    .unwrap();
    for (seq, host) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
        let line = format!("{host} - - [d] \"GET / HTTP/1.1\" {} 5", 200 + seq);
        let batch = RecordBatch::try_new(
            std::sync::Arc::clone(&schema),
            vec![std::sync::Arc::new(StringArray::from(vec![line]))],
        )
        .unwrap();
        let out = program.process(&batch, &[], seq as u64).await.unwrap();
        let rows = &out.streams[0].1;
        let col = |i: usize| {
            arrow::compute::cast(rows.column(i), &arrow::datatypes::DataType::Utf8).unwrap()
        };
        assert_eq!(col(0).as_string::<i32>().value(0), *host);
        assert_eq!(col(1).as_string::<i32>().value(0), (200 + seq).to_string());
    }
}

#[test]
fn random_cut_forest_scores_an_outlier_far_above_the_stream_it_learned() {
    let dir = tempfile::tempdir().unwrap();
    // The developer guide's anomaly-detection pump, with its parameters spelled out.
    std::fs::write(
        dir.path().join("app.sql"),
        "CREATE OR REPLACE STREAM \"DESTINATION_SQL_STREAM\" (\n\
           \"TICKER_SYMBOL\" VARCHAR(4), \"SECTOR\" VARCHAR(16), \"CHANGE\" REAL, \"PRICE\" REAL,\n\
           \"ANOMALY_SCORE\" DOUBLE);\n\
         CREATE OR REPLACE PUMP \"STREAM_PUMP\" AS INSERT INTO \"DESTINATION_SQL_STREAM\"\n\
           SELECT STREAM \"TICKER_SYMBOL\", \"SECTOR\", \"CHANGE\", \"PRICE\", \"ANOMALY_SCORE\"\n\
           FROM TABLE(RANDOM_CUT_FOREST(\n\
             CURSOR(SELECT STREAM * FROM \"SOURCE_SQL_STREAM_001\"), 100, 256, 100000, 1));",
    )
    .unwrap();
    let mut input = String::new();
    let mut x: u64 = 5;
    for i in 0..1_500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (change, price) = if i == 1_200 {
            (40.0, 160.0)
        } else {
            (
                (x % 200) as f64 / 100.0 - 1.0,
                100.0 + (x % 1000) as f64 / 250.0,
            )
        };
        input.push_str(&format!(
            "{{\"TICKER_SYMBOL\": \"AMZN\", \"SECTOR\": \"TECH\", \"CHANGE\": {change}, \"PRICE\": {price}}}\n"
        ));
    }
    std::fs::write(dir.path().join("in.ndjson"), input).unwrap();
    let run = || {
        let (ok, rows, err) = replay(&[
            "--sql",
            dir.path().join("app.sql").to_str().unwrap(),
            "--input",
            dir.path().join("in.ndjson").to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        rows.iter()
            .map(|r| r["ANOMALY_SCORE"].as_f64().unwrap())
            .collect::<Vec<f64>>()
    };
    let scores = run();
    assert_eq!(scores.len(), 1_500);
    // Nothing is scored while the forest warms up (the first quarter of a sample).
    assert!(scores[..64].iter().all(|s| *s == 0.0));
    let mut ordinary: Vec<f64> = scores[300..].to_vec();
    ordinary.remove(1_200 - 300);
    ordinary.sort_by(f64::total_cmp);
    let median = ordinary[ordinary.len() / 2];
    assert!(
        median > 0.5 && median < 2.0,
        "ordinary rows score about 1: {median}"
    );
    assert!(
        scores[1_200] > 2.0 * ordinary[ordinary.len() - 1],
        "the outlier {} against the highest ordinary score {}",
        scores[1_200],
        ordinary[ordinary.len() - 1]
    );
    // The same input gives the same scores.
    assert_eq!(run(), scores);
}
