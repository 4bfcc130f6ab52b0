//! Kinesis Data Analytics functions: the log parsers `REGEX_LOG_PARSE`, `W3C_LOG_PARSE` and
//! `VARIABLE_COLUMN_LOG_PARSE` over access-log lines, each through a [`SqlProgram`] as a pump
//! runs it, next to DataFusion's `regexp_match` with the same pattern (the peer); and
//! `RANDOM_CUT_FOREST` with KDA's default forest.
//!
//! `cargo bench --bench kda`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rivulet::{SqlProgram, WatermarkSettings};

const ROWS: usize = 8192;

/// Common-log lines with varied hosts, users, paths, statuses and sizes; and CSV fields.
fn input() -> RecordBatch {
    let mut x: u64 = 9;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut logs = Vec::with_capacity(ROWS);
    let mut csv = Vec::with_capacity(ROWS);
    for i in 0..ROWS {
        let host = format!("10.{}.{}.{}", next() % 256, next() % 256, next() % 256);
        let user = ["-", "john", "mary"][i % 3];
        let path = format!("/items/{}/view", next() % 100_000);
        let status = [200, 304, 404, 500][(next() % 4) as usize];
        logs.push(format!(
            "{host} - {user} [24/May/2004:22:{:02}:{:02} -0700] \"GET {path} HTTP/1.1\" {status} {}",
            i % 60,
            (i / 60) % 60,
            next() % 10_000
        ));
        csv.push(format!("{host},{user},{status},{}", next() % 10_000));
    }
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("log", DataType::Utf8, true),
            Field::new("fields", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(StringArray::from(logs)),
            Arc::new(StringArray::from(csv)),
        ],
    )
    .expect("bench batch")
}

const PATTERN: &str = r#"(\S+) (\S+) (\S+) \[([^\]]+)\] "([^"]*)" (\d+) (\d+)"#;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let batch = input();
    let regex_kda = format!(
        "CREATE OR REPLACE STREAM \"D\" (host VARCHAR(16), status VARCHAR(4));\n\
         CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"D\" SELECT STREAM t.r.COLUMN1, t.r.COLUMN6 \
         FROM (SELECT STREAM REGEX_LOG_PARSE(\"log\", '{PATTERN}') AS r FROM SOURCE_SQL_STREAM_001) AS t;"
    );
    let w3c_kda = "CREATE OR REPLACE STREAM \"D\" (host VARCHAR(16), status VARCHAR(4));\n\
         CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"D\" SELECT STREAM t.r.COLUMN1, t.r.COLUMN6 \
         FROM (SELECT STREAM W3C_LOG_PARSE(\"log\", 'COMMON') AS r FROM SOURCE_SQL_STREAM_001) AS t;"
        .to_owned();
    let variable_kda = "CREATE OR REPLACE STREAM \"D\" (host VARCHAR(16), bytes INTEGER);\n\
         CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"D\" SELECT STREAM t.r.HOST, t.r.BYTES \
         FROM (SELECT STREAM VARIABLE_COLUMN_LOG_PARSE(\"fields\", \
         'HOST TYPE VARCHAR(16), USER_NAME TYPE VARCHAR(8), STATUS TYPE INTEGER, BYTES TYPE INTEGER', \
         ',') AS r FROM SOURCE_SQL_STREAM_001) AS t;"
        .to_owned();
    // The peer: DataFusion's own regex function, the same groups, anchored as REGEX_LOG_PARSE is.
    let regexp_match = format!(
        "SELECT regexp_match(log, '^(?:{PATTERN})$')[1] AS host, \
         regexp_match(log, '^(?:{PATTERN})$')[6] AS status FROM source"
    );
    let mut group = c.benchmark_group("kda_log_parse");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, sql) in [
        ("regex_log_parse", regex_kda),
        ("regexp_match_datafusion", regexp_match),
        ("w3c_log_parse_common", w3c_kda),
        ("variable_column_log_parse", variable_kda),
    ] {
        let mut program = runtime
            .block_on(SqlProgram::new(
                &sql,
                batch.schema(),
                WatermarkSettings::default(),
            ))
            .expect("plan");
        group.bench_function(BenchmarkId::new(name, ROWS), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let out = program.process(&batch, &[], 0).await.expect("run");
                    assert!(out.issues.is_empty());
                    out.streams.iter().map(|s| s.1.num_rows()).sum::<usize>()
                })
            })
        });
    }
    group.finish();

    // RANDOM_CUT_FOREST with KDA's defaults (100 trees of 256 points) on two numeric columns:
    // each row scored, then sampled into the forest. The forest is warm before measuring.
    let numbers = {
        let mut x: u64 = 3;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (a, b): (Vec<f64>, Vec<f64>) = (0..ROWS)
            .map(|_| {
                (
                    (next() % 10_000) as f64 / 100.0,
                    (next() % 10_000) as f64 / 100.0,
                )
            })
            .unzip();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("change", DataType::Float64, true),
                Field::new("price", DataType::Float64, true),
            ])),
            vec![
                Arc::new(arrow::array::Float64Array::from(a)),
                Arc::new(arrow::array::Float64Array::from(b)),
            ],
        )
        .expect("bench batch")
    };
    let rcf = "CREATE OR REPLACE STREAM \"D\" (price DOUBLE, anomaly_score DOUBLE);\n\
         CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"D\" SELECT STREAM \"price\", ANOMALY_SCORE \
         FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM \"change\", \"price\" FROM SOURCE_SQL_STREAM_001)));";
    let mut program = runtime
        .block_on(SqlProgram::new(
            rcf,
            numbers.schema(),
            WatermarkSettings::default(),
        ))
        .expect("plan");
    runtime
        .block_on(program.process(&numbers, &[], 0))
        .expect("warm up");
    let mut group = c.benchmark_group("kda_random_cut_forest");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("100_trees_256_points", ROWS), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let out = program.process(&numbers, &[], 0).await.expect("run");
                out.streams.iter().map(|s| s.1.num_rows()).sum::<usize>()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
