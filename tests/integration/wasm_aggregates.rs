//! WASM aggregates (the `ewma` example built from `udfs/`) in windows: equal to the same aggregate
//! compiled natively, across a checkpoint restore, in merging session windows, and contained when
//! a call fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use bytes::Bytes;
use ewma::Ewma;
use rivulet::wasm::{WasmLimits, WasmModule};
use rivulet::{Column, Record, RecordDecoder, RecordFormat, SqlProgram, WatermarkSettings};
use rivulet_udf::{Aggregate, Timestamp};

use super::wasm::built;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const HALF_LIFE_S: f64 = 5.0;

/// A row: key, price (or NULL), event time in milliseconds.
type Row = (String, Option<f64>, i64);

fn decode(rows: &[Row], chunk: usize) -> Vec<RecordBatch> {
    let mut decoder = RecordDecoder::builder(RecordFormat::Json)
        .with_columns(vec![
            Column::new("ticker_symbol", DataType::Utf8),
            Column::new("price", DataType::Float64),
            Column::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            ),
        ])
        .with_batch_size(chunk)
        .build()
        .unwrap();
    rows.chunks(chunk)
        .map(|c| {
            let records: Vec<Record> = c
                .iter()
                .map(|(k, p, t)| {
                    let price = p.map_or("null".to_owned(), |p| format!("{p:?}"));
                    Record::new(
                        Bytes::from(format!(
                            r#"{{"ticker_symbol":"{k}","price":{price},"event_time":{t}}}"#
                        )),
                        0,
                    )
                })
                .collect();
            let out = decoder.decode(&records).unwrap();
            assert!(out.failures.is_empty());
            out.batch
        })
        .collect()
}

async fn module(limits: WasmLimits) -> Option<WasmModule> {
    let path = built("ewma")?;
    Some(
        WasmModule::load(path.to_str().unwrap(), limits)
            .await
            .unwrap(),
    )
}

/// (key, window start) → (ewma, count of prices) from the output.
fn results(out: &[RecordBatch]) -> BTreeMap<(String, i64), (Option<f64>, i64)> {
    let mut m = BTreeMap::new();
    for b in out {
        let k = b.column(0).as_string::<i32>();
        let w = b.column(1).as_primitive::<TimestampMillisecondType>();
        let e = b.column(2).as_primitive::<Float64Type>();
        let n = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let prev = m.insert(
                (k.value(i).to_owned(), w.value(i)),
                ((!e.is_null(i)).then(|| e.value(i)), n.value(i)),
            );
            assert!(prev.is_none(), "one row per key and window");
        }
    }
    m
}

/// The same, computed with the natively compiled aggregate over `rows` in order.
fn native(rows: &[Row], window_ms: i64) -> BTreeMap<(String, i64), (Option<f64>, i64)> {
    let mut states: BTreeMap<(String, i64), (Ewma, i64)> = BTreeMap::new();
    for (k, p, t) in rows {
        let s = states
            .entry((k.clone(), t.div_euclid(window_ms) * window_ms))
            .or_default();
        if let Some(p) = p {
            s.0.update(*p, Timestamp(t * 1000), HALF_LIFE_S);
            s.1 += 1;
        }
    }
    states
        .into_iter()
        .map(|(k, (e, n))| (k, (e.evaluate(), n)))
        .collect()
}

fn assert_same(
    got: &BTreeMap<(String, i64), (Option<f64>, i64)>,
    want: &BTreeMap<(String, i64), (Option<f64>, i64)>,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, (e, n)) in want {
        let (ge, gn) = got[k];
        assert_eq!(gn, *n, "{k:?}: count");
        match (ge, e) {
            // Merged partial states add the same terms in another order.
            (Some(g), Some(w)) => assert!(
                (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                "{k:?}: {g} vs {w}"
            ),
            (None, None) => {}
            other => panic!("{k:?}: {other:?}"),
        }
    }
}

const SQL: &str = "SELECT ticker_symbol, window_start, ewma(price, event_time, 5.0) AS e, \
                   COUNT(price) AS n FROM source \
                   GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND)";

/// 24,000 rows over 60 s, 8 tickers, one price in 20 NULL, and a ticker whose prices are all NULL.
fn ticker_rows() -> Vec<Row> {
    let mut rng = fastrand::Rng::with_seed(3);
    (0..24_000)
        .map(|i| {
            let k = rng.usize(..9);
            let price = (k < 8 && rng.u8(..20) > 0).then(|| 10.0 + rng.f64() * 90.0);
            let key = if k < 8 {
                format!("T{k}")
            } else {
                "NONE".to_owned()
            };
            (key, price, T0 + i * 60_000 / 24_000)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_in_tumbling_windows_equals_the_native_aggregate_across_a_restore() {
    let Some(module) = module(WasmLimits::default()).await else {
        return;
    };
    let functions = module.sql_functions();
    let rows = ticker_rows();
    let input = decode(&rows, 2000);
    let want = native(&rows, 10_000);
    assert!(
        want.values().any(|(e, _)| e.is_none()),
        "a group of NULL prices evaluates to NULL"
    );
    let schema = input[0].schema();
    let settings = WatermarkSettings::default();

    // Uninterrupted.
    let mut program = SqlProgram::with_functions(SQL, Arc::clone(&schema), settings, &functions)
        .await
        .unwrap();
    let mut out = Vec::new();
    for (seq, b) in input.iter().enumerate() {
        let o = program.process(b, &[], seq as u64).await.unwrap();
        assert!(o.issues.is_empty(), "{:?}", o.issues.first());
        out.extend(o.streams.into_iter().map(|s| s.1));
    }
    out.extend(
        program
            .finish(99)
            .await
            .unwrap()
            .streams
            .into_iter()
            .map(|s| s.1),
    );
    assert_same(&results(&out), &want);

    // Stopped mid-window: the state (each group's WASM state bytes) goes into a checkpoint, and a
    // new program restores it.
    let mut first = SqlProgram::with_functions(SQL, Arc::clone(&schema), settings, &functions)
        .await
        .unwrap();
    let mut out = Vec::new();
    let half = input.len() / 2 + 1;
    for (seq, b) in input[..half].iter().enumerate() {
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
    assert!(
        first.live_window_states() > 0,
        "the cut falls inside open windows"
    );
    let state = first.snapshot().unwrap();
    drop(first);
    let mut second = SqlProgram::with_functions(SQL, schema, settings, &functions)
        .await
        .unwrap();
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
    assert_same(&results(&out), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_in_session_windows_merges_sessions_out_of_order() {
    let Some(module) = module(WasmLimits::default()).await else {
        return;
    };
    let functions = module.sql_functions();
    // Two sessions of one key (1 s gap): rows every 100 ms from 0 s and from 5 s. The first batch
    // has the even rows and the second the odd ones, so each session is built from runs that
    // merge.
    let mut rng = fastrand::Rng::with_seed(5);
    let times: Vec<i64> = (0..20)
        .map(|i| T0 + i * 100)
        .chain((0..20).map(|i| T0 + 5_000 + i * 100))
        .collect();
    let rows: Vec<Row> = times
        .iter()
        .map(|&t| ("K".to_owned(), Some(rng.f64() * 100.0), t))
        .collect();
    let (even, odd): (Vec<_>, Vec<_>) = rows
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let ordered: Vec<Row> = even.into_iter().chain(odd).map(|(_, r)| r).collect();
    let input = decode(&ordered, 20);
    let sql = "SELECT ticker_symbol, window_start, ewma(price, event_time, 5.0) AS e, \
               COUNT(price) AS n FROM source \
               GROUP BY ticker_symbol, SESSION(event_time, INTERVAL '1' SECOND)";
    // The odd rows arrive after later even ones: within the allowed lateness.
    let settings = WatermarkSettings {
        allowed_lateness: std::time::Duration::from_secs(10),
        ..WatermarkSettings::default()
    };
    let mut program = SqlProgram::with_functions(sql, input[0].schema(), settings, &functions)
        .await
        .unwrap();
    let mut out = Vec::new();
    for (seq, b) in input.iter().enumerate() {
        let o = program.process(b, &[], seq as u64).await.unwrap();
        assert!(o.issues.is_empty(), "{:?}", o.issues.first());
        out.extend(o.streams.into_iter().map(|s| s.1));
    }
    out.extend(
        program
            .finish(9)
            .await
            .unwrap()
            .streams
            .into_iter()
            .map(|s| s.1),
    );
    let got = results(&out);
    // Natively, each session's rows in time order; sessions keyed by their first row's time.
    let mut want = BTreeMap::new();
    for session in [&rows[..20], &rows[20..]] {
        let mut e = Ewma::default();
        for (_, p, t) in session {
            e.update(p.unwrap(), Timestamp(t * 1000), HALF_LIFE_S);
        }
        want.insert(("K".to_owned(), session[0].2), (e.evaluate(), 20));
    }
    assert_same(&got, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_aggregate_call_changes_no_state_and_sends_its_rows_to_the_error_output() {
    // A fuel budget that a call over a few rows stays within and a call over 20,000 rows exceeds:
    // deterministic, unlike a deadline.
    let limits = WasmLimits {
        fuel: Some(300_000),
        ..WasmLimits::default()
    };
    let Some(module) = module(limits).await else {
        return;
    };
    let functions = module.sql_functions();
    let small = |from: i64| -> Vec<Row> {
        (0..10)
            .map(|i| {
                (
                    "K1".to_owned(),
                    Some((from + i) as f64),
                    T0 + (from + i) * 10,
                )
            })
            .collect()
    };
    let a = small(0);
    let c = small(20);
    // Batch B: K1 rows, and K9, whose only rows are in B.
    let b: Vec<Row> = (0..20_000)
        .map(|i| {
            let key = if i % 2 == 0 { "K1" } else { "K9" };
            (key.to_owned(), Some(1e6), T0 + 200 + i % 100)
        })
        .collect();
    let batches: Vec<RecordBatch> = [&a, &b, &c]
        .iter()
        .map(|rows| decode(rows, rows.len()).remove(0))
        .collect();
    let sql = "SELECT ticker_symbol, window_start, ewma(price, event_time, 5.0) AS e, \
               COUNT(*) AS n FROM source \
               GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND)";
    let mut program = SqlProgram::with_functions(
        sql,
        batches[0].schema(),
        WatermarkSettings::default(),
        &functions,
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for (seq, batch) in batches.iter().enumerate() {
        let o = program.process(batch, &[], seq as u64).await.unwrap();
        issues.extend(o.issues);
        out.extend(o.streams.into_iter().map(|s| s.1));
    }
    out.extend(
        program
            .finish(9)
            .await
            .unwrap()
            .streams
            .into_iter()
            .map(|s| s.1),
    );
    assert_eq!(issues.len(), 20_000, "every row of the failed call");
    assert!(issues.iter().all(|i| i.input_row.is_some()));
    assert!(
        issues[0].reason.contains("fuel") && issues[0].reason.contains("window"),
        "{}",
        issues[0].reason
    );
    // The window holds exactly the rows of A and C: COUNT(*) did not count B either, and K9,
    // whose only rows failed, has no row.
    let got = results(&out);
    let mut ac = a.clone();
    ac.extend(c.clone());
    assert_same(&got, &native(&ac, 10_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_one_hopping_window_changes_no_window_and_no_aggregate() {
    let limits = WasmLimits {
        fuel: Some(300_000),
        ..WasmLimits::default()
    };
    let Some(module) = module(limits).await else {
        return;
    };
    let functions = module.sql_functions();
    // Windows of 10 s every 5 s. Batch B has 10 rows in [0 s, 5 s), in windows [-5, 5) and
    // [0, 10), and 20,000 rows in [5 s, 10 s), in [0, 10) and [5, 15): the calls for [-5, 5)
    // succeed, the others run out of fuel.
    let small = |from: i64| -> Vec<Row> {
        (0..10)
            .map(|i| {
                (
                    "K1".to_owned(),
                    Some((from + i) as f64),
                    T0 + (from + i) * 10,
                )
            })
            .collect()
    };
    let a = small(0);
    let mut b: Vec<Row> = (0..10)
        .map(|i| ("K1".to_owned(), Some(7.0), T0 + 1000 + i))
        .collect();
    b.extend((0..20_000).map(|i| ("K1".to_owned(), Some(1e6), T0 + 5000 + i % 1000)));
    let c = small(20);
    let batches: Vec<RecordBatch> = [&a, &b, &c]
        .iter()
        .map(|rows| decode(rows, rows.len()).remove(0))
        .collect();
    // Two guest aggregates and a built-in one in one statement.
    let sql = "SELECT ticker_symbol, window_start, ewma(price, event_time, 5.0) AS e, \
               COUNT(*) AS n, ewma(price, event_time, 50.0) AS e2 FROM source \
               GROUP BY ticker_symbol, HOP(event_time, INTERVAL '5' SECOND, INTERVAL '10' SECOND)";
    let mut program = SqlProgram::with_functions(
        sql,
        batches[0].schema(),
        WatermarkSettings::default(),
        &functions,
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for (seq, batch) in batches.iter().enumerate() {
        let o = program.process(batch, &[], seq as u64).await.unwrap();
        issues.extend(o.issues);
        out.extend(o.streams.into_iter().map(|s| s.1));
    }
    out.extend(
        program
            .finish(9)
            .await
            .unwrap()
            .streams
            .into_iter()
            .map(|s| s.1),
    );
    // Each row of B once, whatever the number of windows it is in.
    assert_eq!(issues.len(), 20_010);
    let mut rows: Vec<usize> = issues.iter().map(|i| i.input_row.unwrap()).collect();
    rows.sort_unstable();
    rows.dedup();
    assert_eq!(rows.len(), 20_010);
    // Every window holds exactly the rows of A and C, in every aggregate. (B's times moved the
    // watermark past [-5 s, 5 s), which closed before C came: C counts in [0 s, 10 s) only.)
    let mut want: BTreeMap<(String, i64), (Option<f64>, i64)> = BTreeMap::new();
    for (start, rows) in [
        (T0 - 5_000, a.clone()),
        (T0, [a.clone(), c.clone()].concat()),
    ] {
        let mut e = Ewma::default();
        let mut n = 0;
        for (_, p, t) in &rows {
            if (start..start + 10_000).contains(t) {
                e.update(p.unwrap(), Timestamp(t * 1000), HALF_LIFE_S);
                n += 1;
            }
        }
        want.insert(("K1".to_owned(), start), (e.evaluate(), n));
    }
    assert_same(&results(&out), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_checkpoint_under_a_fuel_limit_and_a_failed_evaluation_gives_nulls() {
    // 5,000 keys, one row each, in batches of 10: every update is small, but evaluating the
    // window's 5,000 groups at once runs out of fuel. Snapshot and restore install the states
    // without calling the guest, so they cannot run out of anything.
    let limits = WasmLimits {
        fuel: Some(300_000),
        ..WasmLimits::default()
    };
    let Some(module) = module(limits).await else {
        return;
    };
    let functions = module.sql_functions();
    let rows: Vec<Row> = (0..5000)
        .map(|i| (format!("K{i}"), Some(i as f64), T0 + i))
        .collect();
    let input = decode(&rows, 10);
    let mut first = SqlProgram::with_functions(
        SQL,
        input[0].schema(),
        WatermarkSettings::default(),
        &functions,
    )
    .await
    .unwrap();
    for (seq, b) in input.iter().enumerate() {
        let o = first.process(b, &[], seq as u64).await.unwrap();
        assert!(o.issues.is_empty(), "{:?}", o.issues.first());
    }
    let state = first.snapshot().expect("a snapshot calls no guest");
    let mut second = SqlProgram::with_functions(
        SQL,
        input[0].schema(),
        WatermarkSettings::default(),
        &functions,
    )
    .await
    .unwrap();
    second.restore(&state).expect("a restore calls no guest");
    assert_eq!(second.live_window_states(), 5000);
    let o = second.finish(999).await.expect("the pipeline goes on");
    let emitted: usize = o.streams.iter().map(|s| s.1.num_rows()).sum();
    assert_eq!(emitted, 5000, "every group is emitted");
    for (_, b) in &o.streams {
        assert_eq!(b.column(2).null_count(), b.num_rows(), "ewma is NULL");
        let n = b.column(3).as_primitive::<Int64Type>();
        assert!(n.iter().all(|v| v == Some(1)), "COUNT is there");
    }
    assert_eq!(o.issues.len(), 5000);
    assert!(
        o.issues[0].reason.contains("fuel") && o.issues[0].reason.contains("NULL"),
        "{}",
        o.issues[0].reason
    );
}
