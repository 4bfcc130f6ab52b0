//! The Kinesis source's settings from a pipeline file.

use super::*;

impl PipelineConfig {
    /// The source the `[source]` table describes, reading records of `format`. With
    /// `columns_given` (the columns are not inferred), a CSV header row is skipped.
    pub(super) async fn build_source(
        &self,
        format: &RecordFormat,
        columns_given: bool,
    ) -> Result<Box<dyn Source>> {
        Ok(match &self.source {
            SourceConfig::Generator {
                rate,
                limit,
                seed,
                start_time_ms,
            } => Box::new(
                GeneratorSource::builder()
                    .with_rate(*rate)
                    .with_limit(*limit)
                    .with_seed(*seed)
                    .with_start_time_ms(*start_time_ms)
                    .with_format(match format {
                        RecordFormat::Csv(_) => GeneratorFormat::Csv,
                        _ => GeneratorFormat::Json,
                    })
                    .build()?,
            ),
            SourceConfig::File { path, follow } => {
                let (framing, header) = match format {
                    RecordFormat::Csv(o) => (
                        Framing::CsvRows {
                            quote: o.quote,
                            escape: o.escape,
                        },
                        o.has_header,
                    ),
                    _ => (Framing::Lines, false),
                };
                // With inferred columns the pipeline reads the header itself.
                let skip = usize::from(header && columns_given);
                Box::new(
                    FileSource::builder(self.resolve(path))
                        .with_framing(framing)
                        .with_follow(*follow)
                        .with_skip_records(skip)
                        .build()?,
                )
            }
            #[cfg(feature = "aws")]
            SourceConfig::Kinesis {
                stream,
                region,
                endpoint_url,
                filter_out_of_range_sub_records,
                ..
            } => {
                let k = crate::kinesis::KinesisSource::builder(stream.clone())
                    .client_options(ClientOptions::at(region.as_ref(), endpoint_url.as_ref()))
                    .start_position(self.kinesis_start()?)
                    .poll_settings(self.poll_settings()?)
                    .filter_out_of_range_sub_records(*filter_out_of_range_sub_records);
                Box::new(k.build().await?)
            }
            #[cfg(not(feature = "aws"))]
            SourceConfig::Kinesis { .. } => {
                self.kinesis_start()?;
                unreachable!("kinesis_start fails without the aws feature")
            }
        })
    }

    #[cfg(feature = "aws")]
    pub(super) fn kinesis_start(&self) -> Result<crate::kinesis::StartPosition> {
        use crate::kinesis::StartPosition;
        let SourceConfig::Kinesis {
            start_position,
            start_timestamp,
            ..
        } = &self.source
        else {
            return Ok(StartPosition::TrimHorizon);
        };
        match (start_position, start_timestamp) {
            (StartPositionConfig::AtTimestamp, None) => Err(Error::config(
                "source.start_timestamp",
                "start_position = \"at_timestamp\" needs a start_timestamp",
            )),
            (StartPositionConfig::AtTimestamp, Some(TimestampConfig::Millis(ms))) => {
                Ok(StartPosition::AtTimestamp(*ms))
            }
            (StartPositionConfig::AtTimestamp, Some(TimestampConfig::Text(t))) => {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|d| StartPosition::AtTimestamp(d.timestamp_millis()))
                    .map_err(|e| {
                        Error::config(
                            "source.start_timestamp",
                            format!("`{t}` is not an RFC 3339 time: {e}"),
                        )
                    })
            }
            (_, Some(_)) => Err(Error::config(
                "source.start_timestamp",
                "only used with start_position = \"at_timestamp\"",
            )),
            (StartPositionConfig::TrimHorizon, None) => Ok(StartPosition::TrimHorizon),
            (StartPositionConfig::Latest, None) => Ok(StartPosition::Latest),
        }
    }

    #[cfg(not(feature = "aws"))]
    pub(super) fn kinesis_start(&self) -> Result<()> {
        Err(Error::config(
            "source.type",
            "the kinesis source needs rivulet built with the `aws` feature",
        ))
    }

    #[cfg(feature = "aws")]
    pub(super) fn poll_settings(&self) -> Result<crate::kinesis::PollSettings> {
        use crate::kinesis::{PollSettings, MAX_RECORDS_PER_CALL};
        let mut p = PollSettings::default();
        let SourceConfig::Kinesis {
            max_records,
            poll_interval_ms,
            idle_poll_interval_ms,
            list_shards_interval_ms,
            ..
        } = &self.source
        else {
            return Ok(p);
        };
        if let Some(m) = max_records {
            if !(1..=MAX_RECORDS_PER_CALL).contains(m) {
                return Err(Error::config(
                    "source.max_records",
                    format!("must be between 1 and {MAX_RECORDS_PER_CALL}"),
                ));
            }
            p.max_records = *m;
        }
        if let Some(ms) = poll_interval_ms {
            if *ms < 200 {
                return Err(Error::config(
                    "source.poll_interval_ms",
                    "must be at least 200: a shard takes five GetRecords calls a second",
                ));
            }
            p.min_interval = Duration::from_millis(*ms);
        }
        if let Some(ms) = idle_poll_interval_ms {
            p.idle_interval = Duration::from_millis(*ms);
        }
        if let Some(ms) = list_shards_interval_ms {
            if *ms == 0 {
                return Err(Error::config(
                    "source.list_shards_interval_ms",
                    "must be at least 1",
                ));
            }
            p.list_shards_interval = Duration::from_millis(*ms);
        }
        Ok(p)
    }

    #[cfg(not(feature = "aws"))]
    pub(super) fn poll_settings(&self) -> Result<()> {
        self.kinesis_start()
    }
}
