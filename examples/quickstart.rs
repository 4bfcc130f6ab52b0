//! The quickstart through the library API: generated stock ticks → SQL → a file and memory.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use rivulet::{FileSink, GeneratorSource, MemorySink, Pipeline};

#[tokio::main]
async fn main() -> rivulet::Result<()> {
    let out_dir = std::env::temp_dir().join(format!("rivulet-quickstart-{}", std::process::id()));
    let out_file = out_dir.join("tech-movers.ndjson");

    let memory = MemorySink::new();
    let rows = memory.handle();
    let pipeline = Pipeline::builder()
        .source(
            GeneratorSource::builder()
                .with_limit(Some(20_000))
                .with_start_time_ms(Some(1_767_225_600_000))
                .build()?,
        )
        .sql(
            "SELECT ticker_symbol, price, change \
             FROM SOURCE_SQL_STREAM_001 \
             WHERE sector = 'TECHNOLOGY' AND ABS(change) > 4.0",
        )
        .sink(FileSink::builder(&out_file).with_truncate(true).build()?)
        .sink(memory)
        .build()
        .await?;
    let report = pipeline.run().await?;

    let batches: Vec<RecordBatch> = rows.batches();
    let kept: usize = batches.iter().map(RecordBatch::num_rows).sum();
    println!(
        "{} ticks in, {} big technology moves out, {} errors; written to {}",
        report.metrics.records_in,
        kept,
        report.metrics.records_error,
        out_file.display()
    );

    // What the query promises: only big moves, every one of them stored in both sinks.
    assert_eq!(report.metrics.records_in, 20_000);
    assert_eq!(report.metrics.records_error, 0);
    assert!(kept > 0, "the generator produces big technology moves");
    assert_eq!(kept as u64, report.metrics.rows_out);
    for b in &batches {
        for change in b.column(2).as_primitive::<Float64Type>().iter() {
            assert!(change.unwrap().abs() > 4.0);
        }
    }
    let lines = std::fs::read_to_string(&out_file).map_err(|e| rivulet::Error::Io {
        context: format!("reading {}", out_file.display()),
        source: e,
    })?;
    assert_eq!(lines.lines().count(), kept);
    std::fs::remove_dir_all(&out_dir).ok();
    Ok(())
}
