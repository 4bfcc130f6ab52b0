//! Reference data (`[[reference]]`, an application's reference data sources) and the functions
//! of the `[[udfs]]` modules.

use super::*;

/// The rows of a reference table: `local` (the path resolved) or the table's `s3://` path. With
/// the table's schema from a KDA application, its records are typed by it; else they are read as
/// JSON lines or CSV with a header row, their types inferred.
pub(super) async fn reference_rows(
    r: &ReferenceConfig,
    local: &Path,
    schema: Option<&crate::KdaReference>,
) -> Result<arrow::array::RecordBatch> {
    let bytes = reference_bytes(r, local).await?;
    match schema {
        Some(s) => s.rows(&bytes),
        None => inferred_rows(r, &bytes),
    }
}

/// The reference tables: those `given` (a pipeline file's `[[reference]]`, replay's
/// `--reference`), typed by the application's schema of the same name when it has one, and the
/// application's other tables, read from where KDA read them. An error names the table.
pub(super) async fn reference_tables(
    given: &[ReferenceConfig],
    application: &[crate::KdaReference],
    resolve: &(dyn Fn(&Path) -> PathBuf + Sync),
) -> std::result::Result<crate::SqlFunctions, (String, Error)> {
    let mut functions = crate::SqlFunctions::new();
    for r in given {
        let schema = application.iter().find(|a| a.table == r.name);
        let rows = reference_rows(r, &resolve(Path::new(&r.path)), schema)
            .await
            .map_err(|e| (r.name.clone(), e))?;
        functions = functions.with_reference_table(r.name.clone(), rows);
    }
    for a in application
        .iter()
        .filter(|a| given.iter().all(|g| g.name != a.table))
    {
        let Some(location) = &a.location else {
            return Err((
                a.table.clone(),
                Error::Format(
                    "the application names no S3 file for it: give one with [[reference]] \
                     (or replay's --reference NAME=PATH)"
                        .into(),
                ),
            ));
        };
        let r = ReferenceConfig {
            name: a.table.clone(),
            path: location.clone(),
            format: None,
            region: None,
            endpoint_url: None,
        };
        let rows = reference_rows(&r, Path::new(location), Some(a))
            .await
            .map_err(|e| (a.table.clone(), e))?;
        functions = functions.with_reference_table(a.table.clone(), rows);
    }
    Ok(functions)
}

/// A reference table's file, local or on S3.
pub(super) async fn reference_bytes(r: &ReferenceConfig, local: &Path) -> Result<Vec<u8>> {
    Ok(if let Some(rest) = r.path.strip_prefix("s3://") {
        #[cfg(feature = "aws")]
        {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| Error::Format(format!("`{}` is not s3://bucket/key", r.path)))?;
            crate::aws::s3::get_object(bucket, key, r.region.clone(), r.endpoint_url.clone())
                .await?
                .to_vec()
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = rest;
            return Err(Error::Format(
                "reading from S3 needs rivulet built with the `aws` feature".into(),
            ));
        }
    } else {
        std::fs::read(local).map_err(|e| Error::io(format!("reading {}", local.display()), e))?
    })
}

/// A reference table's rows, their types inferred: JSON lines, or CSV with a header row.
pub(super) fn inferred_rows(
    r: &ReferenceConfig,
    bytes: &[u8],
) -> Result<arrow::array::RecordBatch> {
    let csv = match r.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(Error::Format(format!(
                "format `{other}` is not json or csv"
            )))
        }
        None => r.path.to_ascii_lowercase().ends_with(".csv"),
    };
    let mut cursor = std::io::Cursor::new(bytes);
    let batches: Vec<arrow::array::RecordBatch> = if csv {
        let (schema, _) = arrow::csv::reader::Format::default()
            .with_header(true)
            .infer_schema(&mut cursor, Some(10_000))?;
        cursor.set_position(0);
        arrow::csv::ReaderBuilder::new(std::sync::Arc::new(schema))
            .with_header(true)
            .build(cursor)?
            .collect::<std::result::Result<_, _>>()?
    } else {
        let (schema, _) = arrow::json::reader::infer_json_schema(&mut cursor, Some(10_000))?;
        cursor.set_position(0);
        arrow::json::ReaderBuilder::new(std::sync::Arc::new(schema))
            .build(cursor)?
            .collect::<std::result::Result<_, _>>()?
    };
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::Format(format!("{} holds no rows", r.path)))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

impl PipelineConfig {
    /// The functions of the `[[udfs]]` modules, and the record transform the file names.
    pub(super) async fn functions(
        &self,
    ) -> Result<(
        crate::SqlFunctions,
        Option<std::sync::Arc<dyn crate::RecordTransform>>,
    )> {
        let app = self.kda_application()?;
        let app_references = app.as_ref().map_or(&[][..], |a| &a.references[..]);
        #[cfg_attr(not(feature = "wasm"), allow(unused_mut))]
        let mut functions = reference_tables(&self.reference, app_references, &|p| self.resolve(p))
            .await
            .map_err(|(name, e)| {
                let at = self
                    .reference
                    .iter()
                    .position(|r| r.name == name)
                    .map_or_else(
                        || "query.application".to_owned(),
                        |i| format!("reference[{i}].path"),
                    );
                Error::config(at, format!("{name}: {e}"))
            })?;
        #[cfg_attr(not(feature = "wasm"), allow(unused_mut))]
        let mut transform: Option<std::sync::Arc<dyn crate::RecordTransform>> = None;
        #[cfg_attr(not(feature = "wasm"), allow(unused_mut))]
        let mut transforms_seen: Vec<String> = Vec::new();
        #[cfg(not(feature = "wasm"))]
        if !self.udfs.is_empty() {
            return Err(Error::config(
                "udfs[0]",
                "WASM functions need rivulet built with the `wasm` feature",
            ));
        }
        #[cfg(feature = "wasm")]
        for (i, u) in self.udfs.iter().enumerate() {
            {
                let mut limits = crate::wasm::WasmLimits::default();
                if let Some(ms) = u.deadline_ms {
                    limits.deadline = Duration::from_millis(ms);
                }
                limits.fuel = u.fuel;
                if let Some(mb) = u.max_memory_mb {
                    limits.max_memory_bytes = mb << 20;
                }
                if let Some(kb) = u.max_state_kb {
                    limits.max_state_bytes = kb << 10;
                }
                let key = format!("udfs[{i}]");
                let module = if u.path.starts_with("s3://") {
                    #[cfg(feature = "aws")]
                    {
                        let aws =
                            crate::aws::load_config(u.region.clone(), u.endpoint_url.clone(), &key)
                                .await?;
                        crate::wasm::WasmModule::load_s3(&u.path, &aws, limits).await
                    }
                    #[cfg(not(feature = "aws"))]
                    {
                        crate::wasm::WasmModule::load(&u.path, limits).await
                    }
                } else {
                    if u.region.is_some() || u.endpoint_url.is_some() {
                        return Err(Error::config(
                            format!("{key}.endpoint_url"),
                            "region and endpoint_url apply to s3:// paths only",
                        ));
                    }
                    let location = self.resolve(Path::new(&u.path)).display().to_string();
                    crate::wasm::WasmModule::load(&location, limits).await
                }
                .map_err(|e| Error::config(format!("{key}.path"), e.to_string()))?;
                functions = module.add_to(functions);
                for f in module.functions() {
                    if f.kind != crate::wasm::FunctionKind::Transform {
                        continue;
                    }
                    transforms_seen.push(f.name.clone());
                    if self.transform.as_deref() == Some(f.name.as_str()) {
                        if transform.is_some() {
                            return Err(Error::config(
                                "transform",
                                format!(
                                    "more than one [[udfs]] module has a transform `{}`",
                                    f.name
                                ),
                            ));
                        }
                        transform = Some(std::sync::Arc::new(module.transform(&f.name)?));
                    }
                }
            }
        }
        if let (Some(name), None) = (&self.transform, &transform) {
            return Err(Error::config(
                "transform",
                format!(
                    "no [[udfs]] module has a record transform `{name}` (transforms found: {})",
                    if transforms_seen.is_empty() {
                        "none".to_owned()
                    } else {
                        transforms_seen.join(", ")
                    }
                ),
            ));
        }
        Ok((functions, transform))
    }
}
