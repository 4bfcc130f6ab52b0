//! `ROWTIME`: a record's arrival time, the time it entered the pipeline, or a time read from one
//! of its columns (ISO-8601 text, epoch milliseconds or a timestamp).

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, TimestampMillisecondType};

use super::{DecodeFailure, FailureKind, RecordDecoder};
use crate::format::{epoch_millis, Column};
use crate::record::Record;
use crate::{Error, Result};

/// The `rowtime` setting that makes `ROWTIME` the time a record entered the pipeline (one instant
/// per micro-batch, never going back), as Kinesis Data Analytics defined it, instead of the
/// record's arrival time in the stream.
pub const PROCESSING_ROWTIME: &str = "processing";

/// The index of the column `ROWTIME` is read from, checked to hold times; `None` when `field` is
/// unset or [`PROCESSING_ROWTIME`].
pub(super) fn rowtime_column(columns: &[Column], field: Option<&str>) -> Result<Option<usize>> {
    let Some(name) = field.filter(|&f| f != PROCESSING_ROWTIME) else {
        return Ok(None);
    };
    let c = columns.iter().position(|c| c.name == name).ok_or_else(|| {
        Error::Format(format!(
            "ROWTIME field `{name}` is not a column of the input (columns: {})",
            columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let t = &columns[c].data_type;
    let ok = t.is_integer()
        || t.is_floating()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Timestamp(_, _)
                | DataType::Date32
                | DataType::Date64
        );
    if !ok {
        return Err(Error::Format(format!(
            "ROWTIME field `{}` has type {t}; it must be a string, an integer or a timestamp",
            columns[c].name
        )));
    }
    Ok(Some(c))
}

impl RecordDecoder {
    /// The `ROWTIME` of each decoded row. Rows whose `ROWTIME` field holds no time go to
    /// `failures` and leave `columns` and `row_records`. `times` are the field's times when
    /// the decoding already converted them.
    pub(super) fn rowtimes(
        &mut self,
        records: &[Record],
        columns: &mut [ArrayRef],
        row_records: &mut Vec<usize>,
        failures: &mut Vec<DecodeFailure>,
        times: Option<TimestampMillisecondArray>,
    ) -> Result<TimestampMillisecondArray> {
        match self.rowtime_column {
            None if self.processing_rowtime => {
                // One instant for the whole micro-batch: its records entered together.
                let now = crate::record::now_ms().max(self.last_processing);
                self.last_processing = now;
                Ok(TimestampMillisecondArray::from_iter_values(
                    row_records.iter().map(|_| now),
                ))
            }
            None => Ok(TimestampMillisecondArray::from_iter_values(
                row_records.iter().map(|&i| records[i].arrival_time_ms()),
            )),
            Some(c) => self.field_rowtimes(c, columns, row_records, failures, times),
        }
    }

    /// The times in column `c`, without the rows where it holds none (which become failures).
    fn field_rowtimes(
        &self,
        c: usize,
        columns: &mut [ArrayRef],
        row_records: &mut Vec<usize>,
        failures: &mut Vec<DecodeFailure>,
        times: Option<TimestampMillisecondArray>,
    ) -> Result<TimestampMillisecondArray> {
        let times = match times {
            Some(t) => t,
            None => to_epoch_millis(&columns[c])?,
        };
        if times.null_count() == 0 {
            return Ok(times);
        }
        let keep: BooleanArray = times.iter().map(|t| Some(t.is_some())).collect();
        for (row, t) in times.iter().enumerate() {
            if t.is_none() {
                failures.push(DecodeFailure {
                    index: row_records[row],
                    kind: FailureKind::BadRowtime,
                    reason: format!(
                        "ROWTIME field `{}` is missing or is not an ISO-8601 time or \
                         epoch milliseconds",
                        self.output_schema.field(c).name()
                    ),
                });
            }
        }
        failures.sort_by_key(|f| f.index);
        for col in columns.iter_mut() {
            *col = arrow::compute::filter(col, &keep)?;
        }
        *row_records = row_records
            .iter()
            .zip(times.iter())
            .filter_map(|(&i, t)| t.map(|_| i))
            .collect();
        Ok(arrow::compute::filter(&times, &keep)?
            .as_primitive()
            .clone())
    }
}

/// Converts a column to epoch milliseconds ([`crate::format::epoch_millis`]); values that are not
/// times become null. A column of no type that holds times (`Null` included: a sample that never
/// had the field) is refused.
pub(super) fn to_epoch_millis(array: &ArrayRef) -> Result<TimestampMillisecondArray> {
    let millis = match array.data_type() {
        DataType::Null => None,
        _ => epoch_millis(array)?,
    };
    match millis {
        Some(m) => Ok(m.reinterpret_cast::<TimestampMillisecondType>()),
        None => Err(Error::Format(format!(
            "a ROWTIME field must hold ISO-8601 strings, epoch milliseconds or timestamps, not {}",
            array.data_type()
        ))),
    }
}
