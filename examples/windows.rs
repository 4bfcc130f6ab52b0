//! Event-time windows: per-sector trade counts and prices every 10 seconds of generated ticks,
//! plus a one-minute sliding average per ticker, written to two streams.
//!
//! ```sh
//! cargo run --example windows
//! ```

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use rivulet::{GeneratorSource, MemorySink, Pipeline, WatermarkSettings};

#[tokio::main]
async fn main() -> rivulet::Result<()> {
    let per_sector = MemorySink::new();
    let sectors = per_sector.handle();
    let sliding = MemorySink::new();
    let averages = sliding.handle();
    let report = Pipeline::builder()
        // 20,000 ticks, 1 ms apart on a synthetic clock starting 2026-01-01T00:00:00Z.
        .source(
            GeneratorSource::builder()
                .with_limit(Some(20_000))
                .with_start_time_ms(Some(1_767_225_600_000))
                .build()?,
        )
        .rowtime_field("event_time")
        .sql(
            "INSERT INTO moving_avg \
               SELECT ticker_symbol, price, \
                      AVG(price) OVER (PARTITION BY ticker_symbol ORDER BY ROWTIME \
                        RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) AS avg_1m \
               FROM source; \
             SELECT sector, window_start, COUNT(*) AS trades, MAX(price) AS high \
               FROM source GROUP BY sector, TUMBLE(ROWTIME, INTERVAL '10' SECOND)",
        )
        .sink(per_sector)
        .sink_for("moving_avg", sliding)
        .watermark(WatermarkSettings {
            allowed_lateness: Duration::from_secs(1),
            ..WatermarkSettings::default()
        })
        .build()
        .await?
        .run()
        .await?;

    let trades: i64 = sectors
        .batches()
        .iter()
        .map(|b| {
            b.column_by_name("trades")
                .expect("trades column")
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .sum::<i64>()
        })
        .sum();
    println!(
        "{} ticks → {} sector windows counting {trades} trades; {} sliding averages",
        report.metrics.records_in,
        sectors.num_rows(),
        averages.num_rows()
    );
    // Every tick is counted in exactly one window, and gets exactly one sliding average.
    assert_eq!(trades as u64, report.metrics.records_in);
    assert_eq!(averages.num_rows() as u64, report.metrics.records_in);
    assert_eq!(report.metrics.rows_late, 0);
    Ok(())
}
