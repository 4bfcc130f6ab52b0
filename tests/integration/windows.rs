//! Windowed streaming SQL through the public API: agreement with DataFusion's batch engine,
//! state round trips, bounded state, and windows inside a running pipeline.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use bytes::Bytes;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rivulet::{
    Column, GeneratorSource, MemorySink, Pipeline, Record, RecordDecoder, RecordFormat, SqlProgram,
    WatermarkSettings,
};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Ticker records shaped like the reference file: `keys` tickers, one record per `step_ms`.
fn ticker(n: usize, keys: u64, step_ms: f64) -> Vec<Record> {
    let mut x: u64 = 7;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let k = next() % keys;
            let price = 1.0 + (next() % 49_900) as f64 / 100.0;
            let ts = T0 + (i as f64 * step_ms) as i64;
            let line = format!(
                r#"{{"ticker_symbol": "T{k:05}", "price": {price:.2}, "event_time": {ts}}}"#
            );
            Record::new(Bytes::from(line), 0)
        })
        .collect()
}

fn decoder() -> RecordDecoder {
    RecordDecoder::builder(RecordFormat::Json)
        .with_columns(vec![
            Column::new("ticker_symbol", DataType::Utf8),
            Column::new("price", DataType::Float64),
            Column::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            ),
        ])
        .with_batch_size(8192)
        .build()
        .unwrap()
}

fn batches(records: &[Record]) -> Vec<RecordBatch> {
    let mut d = decoder();
    records
        .chunks(8192)
        .map(|c| {
            let out = d.decode(c).unwrap();
            assert!(out.failures.is_empty());
            out.batch
        })
        .collect()
}

const TUMBLING: &str =
    "SELECT ticker_symbol, TUMBLE_START(event_time, INTERVAL '10' SECOND) AS ws, \
     COUNT(*) AS n, AVG(price) AS avg_price, MIN(price) AS min_price, MAX(price) AS max_price \
     FROM source GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND)";

type Row = (String, i64, i64, f64, f64, f64);

fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let sym = b.column(0).as_string::<i32>();
        let ws = b.column(1).as_primitive::<TimestampMillisecondType>();
        let n = b.column(2).as_primitive::<Int64Type>();
        let avg = b.column(3).as_primitive::<Float64Type>();
        let min = b.column(4).as_primitive::<Float64Type>();
        let max = b.column(5).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.push((
                sym.value(i).to_owned(),
                ws.value(i),
                n.value(i),
                avg.value(i),
                min.value(i),
                max.value(i),
            ));
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

async fn run_streaming(sql: &str, input: &[RecordBatch]) -> Vec<RecordBatch> {
    let mut program = SqlProgram::new(sql, input[0].schema(), WatermarkSettings::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    for (seq, b) in input.iter().enumerate() {
        let o = program.process(b, &[], seq as u64).await.unwrap();
        assert!(o.issues.is_empty(), "{:?}", o.issues.first());
        out.extend(o.streams.into_iter().map(|s| s.1));
    }
    let o = program.finish(input.len() as u64).await.unwrap();
    out.extend(o.streams.into_iter().map(|s| s.1));
    out
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[tokio::test]
async fn tumbling_windows_equal_datafusion_batch_group_by() {
    // 200,000 records over 200 s: 20 windows × 100 tickers.
    let input = batches(&ticker(200_000, 100, 1.0));
    let streamed = rows(&run_streaming(TUMBLING, &input).await);

    let ctx = SessionContext::new();
    let table = MemTable::try_new(input[0].schema(), vec![input.clone()]).unwrap();
    ctx.register_table("ticks", Arc::new(table)).unwrap();
    let batch = ctx
        .sql(
            "SELECT ticker_symbol, \
             CAST(date_bin(INTERVAL '10 seconds', event_time, TIMESTAMP '1970-01-01T00:00:00Z') AS TIMESTAMP(3) WITH TIME ZONE) AS ws, \
             COUNT(*) AS n, AVG(price), MIN(price), MAX(price) FROM ticks \
             GROUP BY ticker_symbol, ws",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let expected = rows(&batch);
    assert_eq!(expected.len(), 2000);
    assert_eq!(streamed.len(), expected.len());
    for (s, e) in streamed.iter().zip(&expected) {
        assert_eq!((&s.0, s.1, s.2), (&e.0, e.1, e.2));
        assert!(
            close(s.3, e.3) && close(s.4, e.4) && close(s.5, e.5),
            "{s:?} vs {e:?}"
        );
    }
}

#[tokio::test]
async fn state_restored_mid_stream_gives_the_uninterrupted_output() {
    let sql = "SELECT ticker_symbol, window_start, COUNT(*) AS n, SUM(price) AS total, \
               COUNT(DISTINCT price) AS prices, APPROX_DISTINCT(CAST(price * 100 AS BIGINT)) AS approx, \
               STDDEV(price) AS sd FROM source \
               GROUP BY ticker_symbol, HOP(event_time, INTERVAL '5' SECOND, INTERVAL '20' SECOND)";
    let input = batches(&ticker(60_000, 50, 1.0));
    let whole = run_streaming(sql, &input).await;

    let schema = input[0].schema();
    let settings = WatermarkSettings::default();
    let mut first = SqlProgram::new(sql, Arc::clone(&schema), settings)
        .await
        .unwrap();
    let mut out = Vec::new();
    let half = input.len() / 2;
    for (seq, b) in input[..half].iter().enumerate() {
        let o = first.process(b, &[], seq as u64).await.unwrap();
        out.extend(o.streams.into_iter().map(|s| s.1));
    }
    let state = first.snapshot().unwrap();
    assert!(
        first.live_window_states() > 0,
        "the cut must fall inside open windows"
    );
    drop(first);
    let mut second = SqlProgram::new(sql, schema, settings).await.unwrap();
    second.restore(&state).unwrap();
    for (seq, b) in input[half..].iter().enumerate() {
        let o = second.process(b, &[], (half + seq) as u64).await.unwrap();
        out.extend(o.streams.into_iter().map(|s| s.1));
    }
    out.extend(
        second
            .finish(99)
            .await
            .unwrap()
            .streams
            .into_iter()
            .map(|s| s.1),
    );

    let flat = |bs: &[RecordBatch]| {
        let mut lines: Vec<String> = Vec::new();
        for b in bs {
            let mut buf = Vec::new();
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(b).unwrap();
            w.finish().unwrap();
            lines.extend(String::from_utf8(buf).unwrap().lines().map(str::to_owned));
        }
        lines.sort();
        lines
    };
    let (a, b) = (flat(&whole), flat(&out));
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    // Counts, sums, distinct sets and sketches restore bit for bit; a variance's merge is
    // floating-point arithmetic, so STDDEV may differ in the last bit.
    let same = |x: &str, y: &str| {
        let (x, y): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(x).unwrap(),
            serde_json::from_str(y).unwrap(),
        );
        x.as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| match (v, &y[k]) {
                (serde_json::Value::Number(p), serde_json::Value::Number(q)) if k == "sd" => {
                    close(p.as_f64().unwrap(), q.as_f64().unwrap())
                }
                (p, q) => p == q,
            })
    };
    if let Some((x, y)) = a.iter().zip(&b).find(|(x, y)| !same(x, y)) {
        panic!("restored run differs:\n  uninterrupted: {x}\n  restored:      {y}");
    }
}

#[tokio::test]
async fn live_state_is_bounded_by_open_windows_times_keys() {
    // 100,000 distinct keys, 1,000,000 rows, 100 windows of 1 s.
    let sql = "SELECT ticker_symbol, COUNT(*) AS n FROM source \
               GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '1' SECOND)";
    let records = ticker(1_000_000, 100_000, 0.1);
    let input = batches(&records);
    let mut program = SqlProgram::new(sql, input[0].schema(), WatermarkSettings::default())
        .await
        .unwrap();
    let mut peak = 0;
    let mut emitted = 0;
    for (seq, b) in input.iter().enumerate() {
        let o = program.process(b, &[], seq as u64).await.unwrap();
        emitted += o.streams.iter().map(|s| s.1.num_rows()).sum::<usize>();
        peak = peak.max(program.live_window_states());
    }
    emitted += program
        .finish(input.len() as u64)
        .await
        .unwrap()
        .streams
        .iter()
        .map(|s| s.1.num_rows())
        .sum::<usize>();
    assert_eq!(
        program.live_window_states(),
        0,
        "everything is freed at the end"
    );
    // A window holds at most one state per key seen in it (~10,000 rows per window here), and
    // at most two windows are open at once: far below one state per row.
    assert!(peak <= 2 * 10_000, "peak live states {peak}");
    assert!(emitted > 500_000, "{emitted}");
}

#[tokio::test]
async fn a_pipeline_emits_windows_and_routes_streams_to_their_sinks() {
    let main = MemorySink::new();
    let main_rows = main.handle();
    let filtered = MemorySink::new();
    let filtered_rows = filtered.handle();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    let report = Pipeline::builder()
        .source(
            GeneratorSource::builder()
                .with_limit(Some(5000))
                .with_start_time_ms(Some(T0))
                .build()
                .unwrap(),
        )
        .rowtime_field("event_time")
        .sql(
            "INSERT INTO tech SELECT ticker_symbol, price, ROWTIME AS t FROM source \
             WHERE sector = 'TECHNOLOGY'; \
             SELECT ticker_symbol, COUNT(*) AS n, window_end FROM tech \
             GROUP BY ticker_symbol, TUMBLE(t, INTERVAL '1' SECOND)",
        )
        .sink(main)
        .sink_for("tech", filtered)
        .error_output(errors)
        .watermark(WatermarkSettings {
            allowed_lateness: Duration::from_millis(0),
            idle_timeout: Duration::from_secs(60),
            ..WatermarkSettings::default()
        })
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.metrics.records_in, 5000);
    let tech = filtered_rows.num_rows();
    assert!(tech > 0 && tech < 5000, "{tech}");
    // Every technology row is counted in exactly one window.
    let mut total = 0;
    for b in main_rows.batches() {
        total += b
            .column(1)
            .as_primitive::<Int64Type>()
            .iter()
            .flatten()
            .sum::<i64>();
    }
    assert_eq!(total as usize + error_rows.num_rows(), tech);
    assert_eq!(
        error_rows.num_rows(),
        0,
        "the generator's clock only moves forward"
    );
    assert!(
        !report.committed.is_empty(),
        "the position was committed once windows were stored"
    );
}

#[tokio::test]
async fn unsupported_stream_shapes_say_what_to_write_instead() {
    let schema = batches(&ticker(10, 2, 1.0))[0].schema();
    let cases = [
        (
            "SELECT ticker_symbol, COUNT(*) FROM source GROUP BY ticker_symbol",
            "TUMBLE",
        ),
        (
            "SELECT a.price FROM source a JOIN source b ON a.ticker_symbol = b.ticker_symbol",
            "time bound",
        ),
        ("SELECT * FROM source ORDER BY price", "ORDER BY"),
        (
            "SELECT ticker_symbol, COUNT(*) AS n FROM source \
             GROUP BY ticker_symbol, SESSION(event_time, INTERVAL '1' SECOND) ORDER BY n",
            "in a statement grouped by TUMBLE or HOP, ORDER BY sorts each window's rows",
        ),
        (
            "SELECT SUM(price) OVER (PARTITION BY ticker_symbol ORDER BY event_time) FROM source",
            "bounded",
        ),
        ("INSERT INTO source SELECT * FROM source", "input stream"),
        (
            "SELECT COUNT(*) AS n FROM source GROUP BY TUMBLE(price, INTERVAL '1' SECOND)",
            "must be a timestamp",
        ),
        (
            "SELECT SUM(price) OVER (ORDER BY price ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s \
             FROM source",
            "must be a timestamp",
        ),
        ("SELECT 1 FROM nowhere", "nowhere"),
    ];
    for (sql, hint) in cases {
        let err = SqlProgram::new(sql, Arc::clone(&schema), WatermarkSettings::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(hint), "{sql}: {err}");
    }
}

#[tokio::test]
async fn explain_names_the_window_time_column_and_lateness() {
    let schema = batches(&ticker(10, 2, 1.0))[0].schema();
    let program = SqlProgram::new(
        &format!("{TUMBLING} HAVING COUNT(*) > 1"),
        schema,
        WatermarkSettings {
            allowed_lateness: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            ..WatermarkSettings::default()
        },
    )
    .await
    .unwrap();
    let text = program.explain();
    assert!(text.contains("tumbling 10 s"), "{text}");
    assert!(text.contains("`event_time`"), "{text}");
    assert!(text.contains("5 s allowed lateness"), "{text}");
    assert!(text.contains("per batch, on emitted windows"), "{text}");
}

#[tokio::test]
async fn late_rows_are_counted_and_reach_the_error_output_with_their_record() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(
        &input,
        "{\"k\":\"a\",\"ts\":\"2026-01-01T00:00:01Z\"}\n\
         {\"k\":\"a\",\"ts\":\"2026-01-01T00:00:12Z\"}\n\
         {\"k\":\"a\",\"ts\":\"2026-01-01T00:00:03Z\"}\n\
         {\"k\":\"a\",\"ts\":\"2026-01-01T00:00:13Z\"}\n",
    )
    .unwrap();
    let out = MemorySink::new();
    let rows = out.handle();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    let report = Pipeline::builder()
        .source(rivulet::FileSource::builder(&input).build().unwrap())
        .sql("SELECT k, COUNT(*) AS n FROM source GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)")
        .sink(out)
        .error_output(errors)
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.metrics.rows_late, 1);
    assert_eq!(report.metrics.records_error, 1);
    assert_eq!(report.metrics.window_states, 0);
    let counts: Vec<i64> = rows
        .batches()
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(counts, vec![1, 2]);
    let e = &error_rows.batches()[0];
    let kind = e.column_by_name("errorCode").unwrap().as_string::<i32>();
    assert_eq!(kind.value(0), "late");
    let raw = e.column_by_name("rawData").unwrap().as_string::<i32>();
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(raw.value(0))
        .unwrap();
    assert_eq!(payload, b"{\"k\":\"a\",\"ts\":\"2026-01-01T00:00:03Z\"}");
}

#[tokio::test]
async fn the_program_tells_which_input_columns_it_reads() {
    let schema = batches(&ticker(10, 2, 1.0))[0].schema(); // ticker_symbol, price, event_time, ROWTIME
    let used = |sql: &'static str| {
        let schema = Arc::clone(&schema);
        async move {
            SqlProgram::new(sql, schema, WatermarkSettings::default())
                .await
                .unwrap()
                .input_columns_used()
        }
    };
    assert_eq!(
        used("SELECT ticker_symbol, COUNT(*) AS n FROM source GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '1' SECOND)").await,
        Some(vec![0, 2])
    );
    assert_eq!(
        used("INSERT INTO s SELECT price FROM source; SELECT * FROM s").await,
        Some(vec![1])
    );
    assert_eq!(used("SELECT * FROM source").await, Some(vec![0, 1, 2]));
}

/// A user-defined aggregate: the sum of squares.
#[derive(Debug, Default)]
struct SumOfSquares(f64);

impl datafusion::logical_expr::Accumulator for SumOfSquares {
    fn update_batch(&mut self, values: &[arrow::array::ArrayRef]) -> datafusion::error::Result<()> {
        self.0 += values[0]
            .as_primitive::<Float64Type>()
            .iter()
            .flatten()
            .map(|v| v * v)
            .sum::<f64>();
        Ok(())
    }

    fn evaluate(&mut self) -> datafusion::error::Result<datafusion::scalar::ScalarValue> {
        Ok(datafusion::scalar::ScalarValue::Float64(Some(self.0)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> datafusion::error::Result<Vec<datafusion::scalar::ScalarValue>> {
        Ok(vec![datafusion::scalar::ScalarValue::Float64(Some(self.0))])
    }

    fn merge_batch(&mut self, states: &[arrow::array::ArrayRef]) -> datafusion::error::Result<()> {
        self.0 += states[0]
            .as_primitive::<Float64Type>()
            .iter()
            .flatten()
            .sum::<f64>();
        Ok(())
    }
}

#[tokio::test]
async fn user_defined_aggregates_run_in_windows_and_survive_a_restore() {
    let udaf = datafusion::logical_expr::create_udaf(
        "sum_sq",
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        datafusion::logical_expr::Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(SumOfSquares::default()))),
        Arc::new(vec![DataType::Float64]),
    );
    let functions = rivulet::SqlFunctions::new().with_udaf(udaf);
    let sql =
        "SELECT ticker_symbol, window_start, sum_sq(price) AS sq, SUM(price * price) AS check_sq \
               FROM source GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND)";
    let input = batches(&ticker(40_000, 10, 1.0));
    let schema = input[0].schema();
    let settings = WatermarkSettings::default();
    let mut first = SqlProgram::with_functions(sql, Arc::clone(&schema), settings, &functions)
        .await
        .unwrap();
    let mut out = Vec::new();
    for (seq, b) in input[..2].iter().enumerate() {
        out.extend(first.process(b, &[], seq as u64).await.unwrap().streams);
    }
    let state = first.snapshot().unwrap();
    let mut second = SqlProgram::with_functions(sql, schema, settings, &functions)
        .await
        .unwrap();
    second.restore(&state).unwrap();
    for (seq, b) in input[2..].iter().enumerate() {
        out.extend(
            second
                .process(b, &[], seq as u64 + 2)
                .await
                .unwrap()
                .streams,
        );
    }
    out.extend(second.finish(99).await.unwrap().streams);
    let mut rows = 0;
    for (_, b) in &out {
        let sq = b.column(2).as_primitive::<Float64Type>();
        let check = b.column(3).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            assert!(
                close(sq.value(i), check.value(i)),
                "{} vs {}",
                sq.value(i),
                check.value(i)
            );
            rows += 1;
        }
    }
    assert_eq!(rows, 40, "4 windows of 10 s × 10 tickers");
}

#[tokio::test]
async fn over_window_state_survives_a_restore() {
    let sql = "SELECT ticker_symbol, price, \
               COUNT(*) OVER (PARTITION BY ticker_symbol ORDER BY event_time \
                 RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW) AS n, \
               SUM(price) OVER (PARTITION BY ticker_symbol ORDER BY event_time \
                 RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW) AS total \
               FROM source";
    let input = batches(&ticker(30_000, 20, 1.0));
    let whole = run_streaming(sql, &input).await;
    let schema = input[0].schema();
    let settings = WatermarkSettings::default();
    let mut first = SqlProgram::new(sql, Arc::clone(&schema), settings)
        .await
        .unwrap();
    let mut out = Vec::new();
    for (seq, b) in input[..2].iter().enumerate() {
        out.extend(
            first
                .process(b, &[], seq as u64)
                .await
                .unwrap()
                .streams
                .into_iter()
                .map(|s| s.1),
        );
    }
    assert!(first.live_window_states() > 0);
    let state = first.snapshot().unwrap();
    let mut second = SqlProgram::new(sql, schema, settings).await.unwrap();
    second.restore(&state).unwrap();
    for (seq, b) in input[2..].iter().enumerate() {
        out.extend(
            second
                .process(b, &[], seq as u64 + 2)
                .await
                .unwrap()
                .streams
                .into_iter()
                .map(|s| s.1),
        );
    }
    out.extend(
        second
            .finish(99)
            .await
            .unwrap()
            .streams
            .into_iter()
            .map(|s| s.1),
    );
    let total_rows = |bs: &[RecordBatch]| bs.iter().map(RecordBatch::num_rows).sum::<usize>();
    assert_eq!(total_rows(&whole), 30_000);
    assert_eq!(total_rows(&out), 30_000);
    let a = arrow::compute::concat_batches(&whole[0].schema(), &whole).unwrap();
    let b = arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
    assert_eq!(a, b, "same rows in the same order");
}

#[tokio::test]
async fn stopping_does_not_publish_open_windows_or_commit_their_input() {
    let out = MemorySink::new();
    let rows = out.handle();
    let pipeline = Pipeline::builder()
        .source(
            GeneratorSource::builder()
                .with_rate(Some(2000.0))
                .with_start_time_ms(Some(T0))
                .build()
                .unwrap(),
        )
        .rowtime_field("event_time")
        .sql("SELECT sector, COUNT(*) AS n FROM source GROUP BY sector, TUMBLE(ROWTIME, INTERVAL '1' HOUR)")
        .sink(out)
        .build()
        .await
        .unwrap();
    let stop = pipeline.shutdown_handle();
    let run = tokio::spawn(pipeline.run());
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.shutdown();
    let report = run.await.unwrap().unwrap();
    assert!(report.metrics.records_in > 0);
    assert_eq!(
        rows.num_rows(),
        0,
        "a partial hour must not be published as final"
    );
    assert!(
        report.committed.is_empty(),
        "rows of the open window must be read again after a restart: {:?}",
        report.committed
    );
    assert!(report.metrics.window_states > 0);
}

fn key_time_batch(rows: &[(&str, i64)]) -> RecordBatch {
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("k", DataType::Utf8, true),
        arrow::datatypes::Field::new("ts", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow::array::StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(arrow::array::Int64Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn times_beyond_any_calendar_are_bad_times_not_crashes() {
    let batch = key_time_batch(&[("a", i64::MIN), ("a", 1_000), ("a", i64::MAX)]);
    let mut program = SqlProgram::new(
        "SELECT k, COUNT(*) AS n FROM source GROUP BY k, HOP(ts, INTERVAL '1' SECOND, INTERVAL '5' SECOND)",
        batch.schema(),
        WatermarkSettings::default(),
    )
    .await
    .unwrap();
    let out = program.process(&batch, &[], 0).await.unwrap();
    let kinds: Vec<(Option<usize>, &str)> = out
        .issues
        .iter()
        .map(|i| (i.input_row, i.kind.as_str()))
        .collect();
    assert_eq!(kinds, vec![(Some(0), "bad_time"), (Some(2), "bad_time")]);
    let rows: usize = program
        .finish(1)
        .await
        .unwrap()
        .streams
        .iter()
        .map(|s| s.1.num_rows())
        .sum();
    assert_eq!(rows, 5, "the one good row is in five hopping windows");
}

#[tokio::test]
async fn a_row_extending_an_open_session_backwards_is_not_late() {
    let sql = "SELECT k, COUNT(*) AS n, SESSION_START(ts, INTERVAL '10' SECOND) AS s \
               FROM source GROUP BY k, SESSION(ts, INTERVAL '10' SECOND)";
    let first = key_time_batch(&[("a", 95_000), ("b", 100_000)]);
    let mut program = SqlProgram::new(sql, first.schema(), WatermarkSettings::default())
        .await
        .unwrap();
    assert!(program
        .process(&first, &[], 0)
        .await
        .unwrap()
        .issues
        .is_empty());
    // 88 s + 10 s gap ends before the watermark (100 s), but a's session [95 s, 105 s) is open.
    let second = key_time_batch(&[("a", 88_000), ("b", 70_000)]);
    let out = program.process(&second, &[], 1).await.unwrap();
    let late: Vec<Option<usize>> = out.issues.iter().map(|i| i.input_row).collect();
    assert_eq!(late, vec![Some(1)], "only b's row at 70 s is late");
    let done = program.finish(2).await.unwrap();
    let b = &done.streams[0].1;
    let counts: Vec<i64> = b.column(1).as_primitive::<Int64Type>().values().to_vec();
    let starts: Vec<i64> = b
        .column(2)
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec();
    let mut rows: Vec<(i64, i64)> = counts.into_iter().zip(starts).collect();
    rows.sort_unstable();
    assert_eq!(rows, vec![(1, 100_000), (2, 88_000)]);
}

#[tokio::test]
async fn kda_application_code_runs_and_a_pump_that_does_not_plan_is_named_with_its_line() {
    let schema = batches(&ticker(10, 2, 1.0))[0].schema();
    let app = "CREATE OR REPLACE STREAM \"DESTINATION_SQL_STREAM\" (sym VARCHAR(8), n BIGINT);\n\
               CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"DESTINATION_SQL_STREAM\"\n\
               SELECT STREAM \"ticker_symbol\", COUNT(*) FROM \"SOURCE_SQL_STREAM_001\"\n\
               GROUP BY \"ticker_symbol\", STEP(\"SOURCE_SQL_STREAM_001\".ROWTIME BY INTERVAL '10' SECOND);";
    let program = SqlProgram::new(app, Arc::clone(&schema), WatermarkSettings::default()).await;
    assert!(program.is_ok(), "{:?}", program.err());
    let bad = app.replace("COUNT(*)", "MAX(no_such_column)");
    let err = SqlProgram::new(&bad, Arc::clone(&schema), WatermarkSettings::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pump P (line 3, column 36)")
            && err.contains("NO_SUCH_COLUMN")
            && err.contains("unquoted names are upper-cased"),
        "{err}"
    );
    // A qualified name is placed at its column, not at the stream.
    let qualified = app.replace("COUNT(*)", "MAX(\"SOURCE_SQL_STREAM_001\".nope)");
    let err = SqlProgram::new(&qualified, schema, WatermarkSettings::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pump P (line 3, column 60)"), "{err}");
}

#[tokio::test]
async fn over_windows_with_different_frames_are_an_error_not_a_crash() {
    let schema = batches(&ticker(10, 2, 1.0))[0].schema();
    let sql = "SELECT ticker_symbol, \
               SUM(price) OVER (PARTITION BY ticker_symbol ORDER BY event_time \
                                RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS a, \
               COUNT(*) OVER (PARTITION BY ticker_symbol ORDER BY event_time \
                              ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS b FROM source";
    let err = SqlProgram::new(sql, schema, WatermarkSettings::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("must share their PARTITION BY, ORDER BY and frame"),
        "{err}"
    );
}

#[tokio::test]
async fn a_reference_table_joins_each_micro_batch_in_kda_code_and_sql() {
    use arrow::array::StringArray;
    // Micro-batches of 7 rows: each joins its own rows.
    let whole = batches(&ticker(100, 3, 1.0)).remove(0);
    let input: Vec<RecordBatch> = (0..whole.num_rows())
        .step_by(7)
        .map(|o| whole.slice(o, 7.min(whole.num_rows() - o)))
        .collect();
    let schema = input[0].schema();
    let expected_joined = {
        let syms = whole.column(0).as_string::<i32>();
        (0..whole.num_rows())
            .filter(|&i| ["T00000", "T00001"].contains(&syms.value(i)))
            .count()
    };
    let companies = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("ticker", DataType::Utf8, false),
            arrow::datatypes::Field::new("company", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["T00000", "T00001"])),
            Arc::new(StringArray::from(vec!["Zero Inc", "One plc"])),
        ],
    )
    .unwrap();
    let functions = rivulet::SqlFunctions::new().with_reference_table("companies", companies);
    let app = "CREATE OR REPLACE STREAM \"DESTINATION_SQL_STREAM\" (sym VARCHAR(8), company VARCHAR(16));\n\
               CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"DESTINATION_SQL_STREAM\"\n\
               SELECT STREAM s.\"ticker_symbol\", c.\"company\" FROM \"SOURCE_SQL_STREAM_001\" AS s\n\
               JOIN \"companies\" AS c ON s.\"ticker_symbol\" = c.\"ticker\";";
    let mut program = SqlProgram::with_functions(
        app,
        Arc::clone(&schema),
        WatermarkSettings::default(),
        &functions,
    )
    .await
    .unwrap();
    let mut joined = 0;
    for (seq, b) in input.iter().enumerate() {
        let o = program.process(b, &[], seq as u64).await.unwrap();
        for (_, out) in &o.streams {
            let sym = arrow::compute::cast(out.column(0), &DataType::Utf8).unwrap();
            let company = arrow::compute::cast(out.column(1), &DataType::Utf8).unwrap();
            let (sym, company) = (sym.as_string::<i32>(), company.as_string::<i32>());
            for i in 0..out.num_rows() {
                let want = if sym.value(i) == "T00000" {
                    "Zero Inc"
                } else {
                    "One plc"
                };
                assert_eq!(company.value(i), want);
                joined += 1;
            }
        }
    }
    assert_eq!(
        joined, expected_joined,
        "each micro-batch's rows, joined once"
    );
    assert!(joined > 30 && joined < 100, "only tickers with a company");
    // A windowed statement joins it too: its rows count in their windows as without the join.
    let windowed = "SELECT c.company AS company, COUNT(*) AS n FROM source AS s \
                    JOIN companies AS c ON s.ticker_symbol = c.ticker \
                    GROUP BY c.company, TUMBLE(event_time, INTERVAL '10' SECOND)";
    let mut program = SqlProgram::with_functions(
        windowed,
        Arc::clone(&schema),
        WatermarkSettings::default(),
        &functions,
    )
    .await
    .unwrap();
    let mut counted = 0;
    for (seq, b) in input.iter().enumerate() {
        let o = program.process(b, &[], seq as u64).await.unwrap();
        assert!(o.issues.is_empty(), "{:?}", o.issues.first());
        counted += o.streams.iter().map(|(_, b)| sum_n(b)).sum::<i64>();
    }
    let o = program.finish(input.len() as u64).await.unwrap();
    assert!(o.issues.is_empty(), "{:?}", o.issues.first());
    counted += o.streams.iter().map(|(_, b)| sum_n(b)).sum::<i64>();
    assert_eq!(counted, joined as i64, "every joined row counted once");
    // OVER windows with a join are refused, with what to write instead.
    let over = "SELECT c.company, COUNT(*) OVER (PARTITION BY c.company ORDER BY event_time \
                RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS n \
                FROM source AS s JOIN companies AS c ON s.ticker_symbol = c.ticker";
    let err = SqlProgram::with_functions(over, schema, WatermarkSettings::default(), &functions)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reference table in a statement of its own"),
        "{err}"
    );
}

fn sum_n(b: &RecordBatch) -> i64 {
    let n = arrow::compute::cast(b.column_by_name("n").unwrap(), &DataType::Int64).unwrap();
    n.as_primitive::<Int64Type>().iter().flatten().sum()
}

/// Ticker rows with a ROWTIME column, as a KDA application reads them.
fn rowtime_ticker(n: usize, keys: u64, step_ms: i64) -> RecordBatch {
    use arrow::array::{Float64Array, StringArray, TimestampMillisecondArray};
    let mut x: u64 = 11;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut syms = Vec::with_capacity(n);
    let mut prices = Vec::with_capacity(n);
    for _ in 0..n {
        syms.push(format!("T{}", next() % keys));
        prices.push((next() % 50_000) as f64 / 100.0);
    }
    let times = (0..n as i64).map(|i| T0 + i * step_ms);
    RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("ticker_symbol", DataType::Utf8, true),
            arrow::datatypes::Field::new("price", DataType::Float64, true),
            arrow::datatypes::Field::new(
                "ROWTIME",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ])),
        vec![
            Arc::new(StringArray::from(syms)),
            Arc::new(Float64Array::from(prices)),
            Arc::new(TimestampMillisecondArray::from_iter_values(times).with_timezone("UTC")),
        ],
    )
    .unwrap()
}

/// Rows of one output stream as text, sorted (a multiset).
fn stream_rows(out: &[(Arc<str>, RecordBatch)], name: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for (_, b) in out.iter().filter(|(n, _)| &**n == name) {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            rows.push(
                cols.iter()
                    .map(|c| c.as_string::<i32>().value(i).to_owned())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows.sort();
    rows
}

#[tokio::test]
async fn pumps_sharing_a_stream_and_top_k_per_window_agree_with_a_direct_count_however_batched() {
    let input = rowtime_ticker(2_000, 6, 50);
    let app = r#"
        CREATE OR REPLACE STREAM "ALERTS" ("sym" VARCHAR(8), "kind" VARCHAR(8));
        CREATE OR REPLACE STREAM "COUNTS" ("kind" VARCHAR(8), "ws" TIMESTAMP, "n" BIGINT);
        CREATE OR REPLACE STREAM "TOP" ("item" VARCHAR(8), "n" BIGINT);
        CREATE OR REPLACE PUMP "C" AS INSERT INTO "COUNTS"
          SELECT STREAM "kind", STEP("ALERTS".ROWTIME BY INTERVAL '20' SECOND), COUNT(*)
          FROM "ALERTS" GROUP BY "kind", STEP("ALERTS".ROWTIME BY INTERVAL '20' SECOND);
        CREATE OR REPLACE PUMP "T" AS INSERT INTO "TOP"
          SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING(
            CURSOR(SELECT STREAM * FROM "ALERTS"), 'sym', 2, 20));
        CREATE OR REPLACE PUMP "HIGH" AS INSERT INTO "ALERTS"
          SELECT STREAM "ticker_symbol", 'HIGH' FROM SOURCE_SQL_STREAM_001 WHERE "price" > 400;
        CREATE OR REPLACE PUMP "BUSY" AS INSERT INTO "ALERTS"
          SELECT STREAM "ticker_symbol", 'BUSY' FROM SOURCE_SQL_STREAM_001
          GROUP BY "ticker_symbol", STEP(SOURCE_SQL_STREAM_001.ROWTIME BY INTERVAL '10' SECOND)
          HAVING COUNT(*) > 35;"#;

    // The alerts, counted directly: (symbol, kind, ROWTIME in ms after T0).
    let syms = input.column(0).as_string::<i32>();
    let prices = input.column(1).as_primitive::<Float64Type>();
    let mut alerts: Vec<(String, &str, i64)> = Vec::new();
    let mut per_window: std::collections::BTreeMap<(String, i64), usize> = Default::default();
    for i in 0..input.num_rows() {
        let t = i as i64 * 50;
        if prices.value(i) > 400.0 {
            alerts.push((syms.value(i).to_owned(), "HIGH", t));
        }
        *per_window
            .entry((syms.value(i).to_owned(), t / 10_000))
            .or_default() += 1;
    }
    for ((sym, w), n) in per_window {
        if n > 35 {
            alerts.push((sym, "BUSY", (w + 1) * 10_000));
        }
    }
    let stamp = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(T0 + ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    };
    let mut counts: std::collections::BTreeMap<(&str, i64), usize> = Default::default();
    let mut by_sym: std::collections::BTreeMap<(i64, String), i64> = Default::default();
    for (sym, kind, t) in &alerts {
        *counts.entry((kind, t / 20_000)).or_default() += 1;
        *by_sym.entry((t / 20_000, sym.clone())).or_default() += 1;
    }
    let mut want_counts: Vec<String> = counts
        .iter()
        .map(|((kind, w), n)| format!("{kind}|{}|{n}", stamp(w * 20_000)))
        .collect();
    want_counts.sort();
    let mut want_top = Vec::new();
    let windows: std::collections::BTreeSet<i64> = by_sym.keys().map(|(w, _)| *w).collect();
    for w in windows {
        let mut in_w: Vec<(i64, &String)> = by_sym
            .iter()
            .filter(|((x, _), _)| *x == w)
            .map(|((_, s), n)| (-n, s))
            .collect();
        in_w.sort();
        want_top.extend(in_w.iter().take(2).map(|(n, s)| format!("{s}|{}", -n)));
    }
    want_top.sort();
    assert!(alerts.iter().any(|a| a.1 == "BUSY") && alerts.iter().any(|a| a.1 == "HIGH"));

    for chunk in [input.num_rows(), 7, 333] {
        let mut program = SqlProgram::new(app, input.schema(), WatermarkSettings::default())
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut seq = 0;
        let mut offset = 0;
        while offset < input.num_rows() {
            let len = chunk.min(input.num_rows() - offset);
            let o = program
                .process(&input.slice(offset, len), &[], seq)
                .await
                .unwrap();
            assert!(o.issues.is_empty(), "{:?}", o.issues.first());
            out.extend(o.streams);
            offset += len;
            seq += 1;
        }
        let o = program.finish(seq).await.unwrap();
        assert!(o.issues.is_empty(), "{:?}", o.issues.first());
        out.extend(o.streams);
        let counts = stream_rows(&out, "COUNTS")
            .into_iter()
            .map(|r| r.replace(".000", ""))
            .collect::<Vec<_>>();
        assert_eq!(counts, want_counts, "batches of {chunk} rows");
        assert_eq!(
            stream_rows(&out, "TOP"),
            want_top,
            "batches of {chunk} rows"
        );
        assert_eq!(stream_rows(&out, "ALERTS").len(), alerts.len());
    }
}

#[tokio::test]
async fn a_stream_read_after_writers_of_different_rows_or_between_its_writers_is_refused() {
    let schema = batches(&ticker(10, 2, 1.0))[0].schema();
    let plan = |sql: &'static str| {
        let schema = Arc::clone(&schema);
        async move {
            SqlProgram::new(sql, schema, WatermarkSettings::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    let differ = "INSERT INTO s SELECT ticker_symbol AS a FROM source; \
                  INSERT INTO s SELECT price AS b FROM source; \
                  SELECT a AS a FROM s";
    let e = plan(differ).await.unwrap_err();
    assert!(
        e.contains("stream s is written by several statements") && e.contains("columns a"),
        "{e}"
    );
    let between = "INSERT INTO s SELECT ticker_symbol AS a FROM source; \
                   SELECT a AS a FROM s; \
                   INSERT INTO s SELECT ticker_symbol AS a FROM source";
    let e = plan(between).await.unwrap_err();
    assert!(
        e.contains("put every statement writing a stream before"),
        "{e}"
    );
    let types = "INSERT INTO s SELECT CAST(price AS BIGINT) AS a FROM source; \
                 INSERT INTO s SELECT CAST(price AS INT) AS a FROM source; \
                 SELECT a AS a FROM s";
    let e = plan(types).await.unwrap_err();
    assert!(e.contains("column a is Int64 and Int32"), "{e}");
    let same = "INSERT INTO s SELECT ticker_symbol AS a FROM source WHERE price > 10; \
                INSERT INTO s SELECT ticker_symbol AS a FROM source WHERE price < 2; \
                SELECT a AS a FROM s";
    assert_eq!(plan(same).await, Ok(()));
    // A micro-batch where only the second writer has rows: the reader gets them.
    let input = batches(&ticker(200, 3, 1.0)).remove(0);
    let prices = input.column(1).as_primitive::<Float64Type>();
    let cheap: Vec<u32> = (0..input.num_rows() as u32)
        .filter(|&i| prices.value(i as usize) < 100.0)
        .collect();
    assert!(!cheap.is_empty());
    let only_cheap =
        arrow::compute::take_record_batch(&input, &arrow::array::UInt32Array::from(cheap.clone()))
            .unwrap();
    let split = "INSERT INTO s SELECT ticker_symbol AS a FROM source WHERE price > 400; \
                 INSERT INTO s SELECT ticker_symbol AS a FROM source WHERE price < 100; \
                 SELECT a AS a FROM s";
    let mut program = SqlProgram::new(split, input.schema(), WatermarkSettings::default())
        .await
        .unwrap();
    let out = program.process(&only_cheap, &[], 0).await.unwrap();
    assert!(out.issues.is_empty(), "{:?}", out.issues.first());
    let read: usize = out
        .streams
        .iter()
        .filter(|(n, _)| &**n == "DESTINATION_SQL_STREAM")
        .map(|(_, b)| b.num_rows())
        .sum();
    assert_eq!(read, cheap.len());
}
