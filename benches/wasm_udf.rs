//! WASM functions against the same functions compiled natively: the fixed cost of one call (a
//! one-row batch) and the cost per row on 8,192-row batches, for an f64 function (haversine) and
//! a utf8 function (PII masking). The WASM modules come from `scripts/build-udfs.sh`.
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

criterion_group!(benches, bench);
criterion_main!(benches);
