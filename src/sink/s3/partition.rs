//! Rows split by the values of the prefix's partition columns, and the key each object of a
//! partition gets.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::{Compression, ObjectFormat, S3Sink};
use crate::ack::Ack;
use crate::format::{Encoder, OutputFormat};
use crate::record::Record;
use crate::sink::{CheckpointRange, ErrorRecord, ErrorStage};
use crate::{Error, Result};

/// Row indices per partition values, and the rows without a value (with the column).
type Groups = (BTreeMap<Vec<String>, Vec<u32>>, Vec<(u32, String)>);

/// A map key for partition values: each value with its length, so no two lists collide.
pub(super) fn group_key(values: &[String]) -> String {
    values.iter().map(|v| format!("{}:{v}", v.len())).collect()
}

impl S3Sink {
    fn extension(&self) -> String {
        let (base, compression) = match &self.format {
            ObjectFormat::Parquet => ("parquet", Compression::None),
            ObjectFormat::Text(OutputFormat::Csv { .. }) => ("csv", self.compression),
            ObjectFormat::Text(_) => ("json", self.compression),
        };
        let envelope = if self.encryption.is_some() {
            ".rve"
        } else {
            ""
        };
        format!(".{base}{}{envelope}", compression.extension())
    }

    /// The key of the next object for partition `values` in the current range: the next number
    /// of that partition whose key this run has not issued yet (the same keys, in the same order,
    /// when a replay of the range writes the same objects).
    pub(super) fn next_key(&mut self, values: &[String], range: &CheckpointRange) -> String {
        if self.counters_range != range.id {
            self.counters.clear();
            self.issued.clear();
            self.counters_range = Arc::clone(&range.id);
        }
        let group = group_key(values);
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let extension = self.extension();
        loop {
            let n = self.counters.entry(group.clone()).or_insert(0);
            let seq = *n;
            *n += 1;
            let seed = {
                use md5::Digest as _;
                let d = md5::Md5::digest(format!("{}\u{1f}{group}\u{1f}{seq}", range.id));
                u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
            };
            let prefix = self.prefix.render(range.started_ms, &refs, seed);
            let key = format!("{prefix}{}-{}-{seq:05}{extension}", self.name, range.id);
            if self.issued.insert(key.clone()) {
                return key;
            }
        }
    }

    /// Splits rows by their partition values. Rows with a null or empty value go to the error
    /// output, as Firehose's dynamic partitioning sends them to its error prefix.
    /// Rows without a value are sent to the error output under a split of `ack`, so the batch is
    /// stored only once they are stored there.
    pub(super) async fn partition(
        &self,
        batch: &RecordBatch,
        ack: &Ack,
    ) -> Result<Vec<(Vec<String>, RecordBatch)>> {
        if self.partition_columns.is_empty() {
            return Ok(vec![(Vec::new(), batch.clone())]);
        }
        let (groups, bad) = self.group_rows(batch)?;
        if !bad.is_empty() {
            self.reject(batch, bad, ack.split()).await?;
        }
        let mut out = Vec::with_capacity(groups.len());
        for (values, rows) in groups {
            let taken = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                arrow::compute::take_record_batch(batch, &UInt32Array::from(rows))?
            };
            out.push((values, taken));
        }
        Ok(out)
    }

    /// Row indices per partition values, and the rows without a value (with the column).
    fn group_rows(&self, batch: &RecordBatch) -> Result<Groups> {
        let mut columns = Vec::with_capacity(self.partition_columns.len());
        for name in &self.partition_columns {
            let idx = batch.schema().index_of(name).map_err(|_| {
                Error::sink(
                    &self.name,
                    format!("the prefix names column `{name}`, which the output does not have"),
                )
            })?;
            columns.push(Arc::clone(batch.column(idx)));
        }
        let options = FormatOptions::default();
        let formatters = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut groups: BTreeMap<Vec<String>, Vec<u32>> = BTreeMap::new();
        let mut bad = Vec::new();
        for row in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(columns.len());
            let mut missing = None;
            for (i, (col, fmt)) in columns.iter().zip(&formatters).enumerate() {
                let v = fmt.value(row).to_string();
                if col.is_null(row) || v.is_empty() {
                    missing = Some(&self.partition_columns[i]);
                    break;
                }
                values.push(v);
            }
            match missing {
                Some(col) => bad.push((row as u32, col.clone())),
                None => groups.entry(values).or_default().push(row as u32),
            }
        }
        Ok((groups, bad))
    }

    /// Sends the rows without a partition value to the error output under `ack`.
    async fn reject(&self, batch: &RecordBatch, bad: Vec<(u32, String)>, ack: Ack) -> Result<()> {
        let Some(errors) = &self.errors else {
            return Err(Error::sink(
                &self.name,
                format!("{} rows have no partition value", bad.len()),
            ));
        };
        let rows = UInt32Array::from(bad.iter().map(|(r, _)| *r).collect::<Vec<_>>());
        let taken = arrow::compute::take_record_batch(batch, &rows)?;
        let lines = Encoder::new(OutputFormat::JsonLines).encode_lines(&taken)?;
        let now = crate::record::now_ms();
        let records = lines
            .into_iter()
            .zip(bad)
            .map(|(line, (_, col))| {
                ErrorRecord::new(
                    ErrorStage::Sink,
                    "partition_key_missing",
                    format!("partition column `{col}` is null or empty"),
                    Record::new(line, now),
                )
            })
            .collect();
        errors.send(records, ack).await
    }
}
