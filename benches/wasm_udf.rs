//! WASM functions against the same functions compiled natively: the fixed cost of one call (a
//! one-row batch) and the cost per row on 8,192-row batches, for an f64 function (haversine) and
//! a utf8 function (PII masking); an aggregate (`ewma`) in a tumbling window against the same
//! state type as a native DataFusion aggregate; and a record transform (`clean_logs`) against its
//! native build. The WASM modules come from `scripts/build-udfs.sh`.
//!
//! ```sh
//! scripts/build-udfs.sh && taskset -c 0 cargo bench --bench wasm_udf
//! ```

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl};
use rivulet::wasm::{WasmLimits, WasmModule, WasmScalarFunction};

const ROWS: usize = 8192;

fn module(name: &str) -> WasmModule {
    let path = format!("{}/udfs/build/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}; build it with scripts/build-udfs.sh"));
    WasmModule::from_bytes(name, &bytes, WasmLimits::default()).unwrap()
}

fn call(f: &WasmScalarFunction, args: &[ArrayRef], ret: DataType) -> ArrayRef {
    let rows = args[0].len();
    let out = f
        .invoke_with_args(ScalarFunctionArgs {
            args: args
                .iter()
                .map(|a| ColumnarValue::Array(Arc::clone(a)))
                .collect(),
            arg_fields: args
                .iter()
                .map(|a| Arc::new(Field::new("a", a.data_type().clone(), true)))
                .collect(),
            number_rows: rows,
            return_field: Arc::new(Field::new("r", ret, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })
        .unwrap();
    match out {
        ColumnarValue::Array(a) => a,
        ColumnarValue::Scalar(_) => unreachable!(),
    }
}

fn bench(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(3);
    let coords: Vec<ArrayRef> = (0..4)
        .map(|k| {
            let range = if k % 2 == 0 { 180.0 } else { 360.0 };
            Arc::new(Float64Array::from_iter_values(
                (0..ROWS).map(|_| rng.f64() * range - range / 2.0),
            )) as ArrayRef
        })
        .collect();
    let texts: ArrayRef = Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| {
        format!(
            "ticket {i}: contact jane.doe{i}@example.com or +1 555 {:07}",
            i * 7
        )
    })));
    let one_coord: Vec<ArrayRef> = coords.iter().map(|a| a.slice(0, 1)).collect();
    let one_text = vec![texts.slice(0, 1)];

    let haversine = module("haversine").scalar("haversine_km").unwrap();
    let mask = module("mask_pii").scalar("mask_pii").unwrap();

    let mut group = c.benchmark_group("wasm_udf");
    group.sample_size(30);
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("call_1_row", "haversine_wasm"), |b| {
        b.iter(|| call(&haversine, &one_coord, DataType::Float64))
    });
    group.bench_function(BenchmarkId::new("call_1_row", "mask_pii_wasm"), |b| {
        b.iter(|| call(&mask, &one_text, DataType::Utf8))
    });

    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function(BenchmarkId::new("batch_8192", "haversine_wasm"), |b| {
        b.iter(|| call(&haversine, &coords, DataType::Float64))
    });
    let f64s: Vec<&Float64Array> = coords
        .iter()
        .map(|a| a.as_any().downcast_ref::<Float64Array>().unwrap())
        .collect();
    group.bench_function(BenchmarkId::new("batch_8192", "haversine_native"), |b| {
        b.iter(|| {
            let out: Float64Array = (0..ROWS)
                .map(|i| {
                    Some(haversine::haversine_km(
                        f64s[0].value(i),
                        f64s[1].value(i),
                        f64s[2].value(i),
                        f64s[3].value(i),
                    ))
                })
                .collect();
            out
        })
    });
    group.bench_function(BenchmarkId::new("batch_8192", "mask_pii_wasm"), |b| {
        b.iter(|| call(&mask, std::slice::from_ref(&texts), DataType::Utf8))
    });
    let strs = texts.as_any().downcast_ref::<StringArray>().unwrap();
    group.bench_function(BenchmarkId::new("batch_8192", "mask_pii_native"), |b| {
        b.iter(|| {
            let out: StringArray = strs.iter().map(|s| s.map(mask_pii::mask_pii)).collect();
            out
        })
    });
    group.finish();
}

/// `ewma::Ewma` as a native DataFusion aggregate, with the same state bytes as the WASM build.
#[derive(Debug, Default)]
struct NativeEwma(ewma::Ewma);

impl datafusion::logical_expr::Accumulator for NativeEwma {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::error::Result<()> {
        use arrow::array::{Array, AsArray};
        let v = values[0].as_primitive::<arrow::datatypes::Float64Type>();
        let t = values[1].as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let h = values[2].as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..v.len() {
            if v.is_valid(i) && t.is_valid(i) && h.is_valid(i) {
                self.0
                    .update(v.value(i), rivulet_udf::Timestamp(t.value(i)), h.value(i));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> datafusion::error::Result<datafusion::scalar::ScalarValue> {
        use rivulet_udf::Aggregate;
        Ok(datafusion::scalar::ScalarValue::Float64(self.0.evaluate()))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> datafusion::error::Result<Vec<datafusion::scalar::ScalarValue>> {
        use rivulet_udf::Aggregate;
        Ok(vec![datafusion::scalar::ScalarValue::Binary(Some(
            self.0.save(),
        ))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::error::Result<()> {
        use arrow::array::AsArray;
        use rivulet_udf::Aggregate;
        for s in states[0].as_binary::<i32>().iter().flatten() {
            self.0.merge(ewma::Ewma::load(s).expect("a state"));
        }
        Ok(())
    }
}

/// `clean_logs` natively, keeping an unchanged record's bytes as the WASM transform does.
#[derive(Debug)]
struct NativeCleanLogs;

impl rivulet::RecordTransform for NativeCleanLogs {
    fn name(&self) -> &str {
        "clean_logs"
    }

    fn transform(&self, records: &[rivulet::Record]) -> Result<Vec<rivulet::Transformed>, String> {
        use rivulet::Transformed;
        Ok(records
            .iter()
            .map(|r| match clean_logs::clean_logs(r.payload()) {
                rivulet_udf::Transformed::Ok(b) => Transformed::Ok(b.into()),
                rivulet_udf::Transformed::Unchanged => Transformed::Ok(r.payload().clone()),
                rivulet_udf::Transformed::Dropped => Transformed::Dropped,
                rivulet_udf::Transformed::Failed(m) => Transformed::ProcessingFailed(m),
            })
            .collect())
    }
}

fn bench_aggregate_and_transform(c: &mut Criterion) {
    use arrow::array::{RecordBatch, TimestampMillisecondArray};
    use arrow::datatypes::{Schema, TimeUnit};
    use rivulet::{Record, RecordTransform, SqlFunctions, SqlProgram};

    // 8,192 ticker rows over 8 s, 64 tickers; all in one 10-second window.
    let t0 = 1_767_225_600_000i64;
    let mut rng = fastrand::Rng::with_seed(9);
    let schema = Arc::new(Schema::new(vec![
        Field::new("ticker_symbol", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..ROWS).map(|_| format!("T{:02}", rng.usize(..64))),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..ROWS).map(|_| 10.0 + rng.f64() * 90.0),
            )),
            Arc::new(
                TimestampMillisecondArray::from_iter_values((0..ROWS).map(|i| t0 + i as i64))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let native = datafusion::logical_expr::create_udaf(
        "ewma",
        vec![
            DataType::Float64,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Float64,
        ],
        Arc::new(DataType::Float64),
        datafusion::logical_expr::Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(NativeEwma::default()))),
        Arc::new(vec![DataType::Binary]),
    );
    let sql = "SELECT ticker_symbol, window_start, ewma(price, event_time, 5.0) AS e FROM source \
               GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND)";
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let program = |functions: SqlFunctions| {
        rt.block_on(SqlProgram::with_functions(
            sql,
            Arc::clone(&schema),
            rivulet::WatermarkSettings::default(),
            &functions,
        ))
        .unwrap()
    };
    let mut wasm_program = program(module("ewma").sql_functions());
    let mut native_program = program(SqlFunctions::new().with_udaf(native));

    let mut group = c.benchmark_group("wasm_udaf");
    group.sample_size(30);
    group.throughput(Throughput::Elements(ROWS as u64));
    // Each iteration folds 8,192 rows into the open window's 64 groups.
    group.bench_function(
        BenchmarkId::new("window_8192_rows_64_groups", "ewma_wasm"),
        |b| b.iter(|| rt.block_on(wasm_program.process(&batch, &[], 0)).unwrap()),
    );
    group.bench_function(
        BenchmarkId::new("window_8192_rows_64_groups", "ewma_native"),
        |b| b.iter(|| rt.block_on(native_program.process(&batch, &[], 0)).unwrap()),
    );
    group.finish();

    // 8,192 log records: a third debug lines, a third with a password, a third left alone.
    let records: Vec<Record> = (0..ROWS)
        .map(|i| {
            let line = match i % 3 {
                0 => format!(r#"{{"level":"debug","msg":"cache miss {i}"}}"#),
                1 => format!(r#"{{"level":"info","user":"u{i}","password":"p{i}"}}"#),
                _ => format!(
                    r#"{{"level":"info","msg":"request {i} served","ms":{}}}"#,
                    i % 97
                ),
            };
            Record::new(line.into(), 0)
        })
        .collect();
    let wasm_transform = module("clean_logs").transform("clean_logs").unwrap();
    let native_transform = NativeCleanLogs;
    let mut group = c.benchmark_group("wasm_transform");
    group.sample_size(30);
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function(BenchmarkId::new("batch_8192", "clean_logs_wasm"), |b| {
        b.iter(|| wasm_transform.transform(&records).unwrap())
    });
    group.bench_function(BenchmarkId::new("batch_8192", "clean_logs_native"), |b| {
        b.iter(|| native_transform.transform(&records).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench, bench_aggregate_and_transform);
criterion_main!(benches);
