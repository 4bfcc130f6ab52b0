//! The schemas of a decoder: what the push decoder reads (a tree of struct columns when JSON
//! paths reach into objects), what the batches it produces hold, and the way from one to the
//! other.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::format::{Column, MetadataColumn, RecordFormat, ROWTIME};
use crate::{Error, Result};

/// How a decoded column is found in the decoder's (possibly nested) output.
#[derive(Debug, Clone)]
pub(super) enum Layout {
    /// The decoder's columns are the output columns, in order.
    Flat,
    /// Each output column is reached by child indexes through struct columns.
    Nested(Vec<Vec<usize>>),
}

impl Layout {
    /// The output columns of a batch the push decoder produced, in column order; a column read
    /// through a null object is null.
    pub(super) fn extract(&self, raw: &RecordBatch) -> Result<Vec<ArrayRef>> {
        match self {
            Self::Flat => Ok(raw.columns().to_vec()),
            Self::Nested(paths) => paths.iter().map(|path| extract_path(raw, path)).collect(),
        }
    }
}

/// The column at child indexes `path`, with the nulls of every struct on the way.
fn extract_path(raw: &RecordBatch, path: &[usize]) -> Result<ArrayRef> {
    let mut array = Arc::clone(raw.column(path[0]));
    let mut nulls: Option<NullBuffer> = None;
    for &child in &path[1..] {
        nulls = NullBuffer::union(nulls.as_ref(), array.logical_nulls().as_ref());
        let s = array.as_struct();
        array = Arc::clone(s.column(child));
    }
    if nulls.is_none() {
        return Ok(array);
    }
    let nulls = NullBuffer::union(nulls.as_ref(), array.logical_nulls().as_ref());
    let data = array.to_data().into_builder().nulls(nulls).build()?;
    Ok(arrow::array::make_array(data))
}

/// The schema the push decoder reads `columns` with, and how the columns are found in it.
pub(super) fn decode_layout(
    format: &RecordFormat,
    columns: &[Column],
) -> Result<(SchemaRef, Layout)> {
    match format {
        RecordFormat::Json => json_layout(columns),
        RecordFormat::Csv(_) => Ok((
            Arc::new(Schema::new(nullable_fields(columns))),
            Layout::Flat,
        )),
    }
}

/// The schema of the batches produced: the columns, the metadata columns, then `ROWTIME`.
pub(super) fn output_schema(columns: &[Column], metadata: &[MetadataColumn]) -> SchemaRef {
    let mut fields = nullable_fields(columns);
    for m in metadata {
        fields.push(Field::new(m.name(), m.data_type(), true));
    }
    fields.push(Field::new(
        ROWTIME,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    ));
    Arc::new(Schema::new(fields))
}

/// One nullable field per column.
fn nullable_fields(columns: &[Column]) -> Vec<Field> {
    columns
        .iter()
        .map(|c| Field::new(&c.name, c.data_type.clone(), true))
        .collect()
}

/// A tree of JSON members, built from the column paths.
#[derive(Debug, Default)]
struct Node {
    children: Vec<(String, Node)>,
    leaf: Option<(DataType, String)>,
}

impl Node {
    fn fields(&self) -> Fields {
        self.children
            .iter()
            .map(|(name, n)| match &n.leaf {
                Some((t, _)) => Field::new(name, t.clone(), true),
                None => Field::new(name, DataType::Struct(n.fields()), true),
            })
            .collect()
    }
}

fn json_layout(columns: &[Column]) -> Result<(SchemaRef, Layout)> {
    let mut root = Node::default();
    let mut paths = Vec::with_capacity(columns.len());
    for c in columns {
        let path = c.effective_path();
        let mut node = &mut root;
        let mut indexes = Vec::new();
        let segs = path.segments();
        for (depth, seg) in segs.iter().enumerate() {
            if let Some((_, owner)) = &node.leaf {
                return Err(Error::Format(format!(
                    "column `{}` reads {path} inside the member that column `{owner}` reads as a value",
                    c.name
                )));
            }
            let pos = match node.children.iter().position(|(n, _)| n == seg) {
                Some(p) => p,
                None => {
                    node.children.push((seg.clone(), Node::default()));
                    node.children.len() - 1
                }
            };
            indexes.push(pos);
            node = &mut node.children[pos].1;
            if depth + 1 == segs.len() {
                if !node.children.is_empty() {
                    return Err(Error::Format(format!(
                        "column `{}` reads {path} as a value, but other columns read members inside it",
                        c.name
                    )));
                }
                match &node.leaf {
                    Some((t, owner)) if t != &c.data_type => {
                        return Err(Error::Format(format!(
                        "columns `{owner}` and `{}` read {path} with different types ({t} and {})",
                        c.name, c.data_type
                    )))
                    }
                    Some(_) => {}
                    None => node.leaf = Some((c.data_type.clone(), c.name.clone())),
                }
            }
        }
        paths.push(indexes);
    }
    let flat = paths
        .iter()
        .enumerate()
        .all(|(i, p)| p.len() == 1 && p[0] == i)
        && root.children.len() == columns.len();
    let schema = Arc::new(Schema::new(root.fields()));
    let layout = if flat {
        Layout::Flat
    } else {
        Layout::Nested(paths)
    };
    Ok((schema, layout))
}
