//! `rivulet replay`: a captured file replayed as a stream through a query, as a pipeline file.

use super::*;

/// Options of `rivulet replay`: a captured file replayed as a stream through a query.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// File holding the SQL (native, or Kinesis Data Analytics application code); optional when
    /// `app` holds the application code.
    pub sql_file: Option<PathBuf>,
    /// A Kinesis Data Analytics application file (see [`KdaApplication`](crate::KdaApplication)):
    /// the input's format and columns, and the application code unless `sql_file` is given.
    pub app: Option<PathBuf>,
    /// The captured input (NDJSON, or CSV with a header row).
    pub input: PathBuf,
    /// `json` or `csv`.
    pub csv: bool,
    /// Input field that gives `ROWTIME` (ISO-8601 or epoch milliseconds).
    pub rowtime: Option<String>,
    /// Directory for `<STREAM>.ndjson` files; `None` writes the output stream to standard output.
    pub output_dir: Option<PathBuf>,
    /// Allowed lateness and idle timeout of windowed queries.
    pub watermark: WatermarkSettings,
    /// Reference tables, by name: local paths or `s3://` URLs of JSON lines or CSV files with a
    /// header row (as `[[reference]]` in a pipeline file).
    pub references: Vec<(String, String)>,
    /// WASM modules whose functions the SQL calls (as `[[udfs]]` in a pipeline file), loaded
    /// with the default [`WasmLimits`](crate::wasm::WasmLimits). Needs the `wasm` feature.
    pub udfs: Vec<PathBuf>,
    /// Threads that decode records side by side (see [`PipelineBuilder::workers`](crate::PipelineBuilder::workers)); `None`:
    /// every core the process may use.
    pub workers: Option<usize>,
}

impl ReplayOptions {
    /// Builds the replay pipeline. Its error output goes to `error_stream.ndjson` in the output
    /// directory, or to standard error.
    pub async fn build(&self) -> Result<Pipeline> {
        let app = self
            .app
            .as_deref()
            .map(crate::KdaApplication::load)
            .transpose()?;
        let sql = match (&self.sql_file, &app) {
            (Some(f), _) => std::fs::read_to_string(f)
                .map_err(|e| Error::io(format!("reading {}", f.display()), e))?,
            (None, Some(a)) => a.sql.clone().ok_or_else(|| {
                Error::config(
                    "--sql",
                    "the application file holds no application code: give it with --sql",
                )
            })?,
            (None, None) => {
                return Err(Error::config(
                    "--sql",
                    "give the SQL (--sql FILE) or an application file (--app FILE)",
                ))
            }
        };
        // The application's input stream, named as rivulet names it.
        let sql = match &app {
            Some(a) => a.code(&sql)?,
            None => sql,
        };
        let (format, framing) = match &app {
            Some(a) => {
                let framing = match &a.format {
                    RecordFormat::Csv(o) => Framing::CsvRows {
                        quote: o.quote,
                        escape: o.escape,
                    },
                    _ => Framing::Lines,
                };
                (a.format.clone(), framing)
            }
            None if self.csv => (
                RecordFormat::Csv(CsvOptions {
                    has_header: true,
                    ..CsvOptions::default()
                }),
                Framing::CsvRows {
                    quote: b'"',
                    escape: None,
                },
            ),
            None => (RecordFormat::Json, Framing::Lines),
        };
        let source = FileSource::builder(&self.input)
            .with_framing(framing)
            .build()?;
        let mut b = Pipeline::builder()
            .source(source)
            .format(format)
            .sql(sql.clone())
            .watermark(self.watermark)
            .batch_settings(BatchSettings::default());
        if let Some(w) = self.workers {
            b = b.workers(w);
        }
        if let Some(a) = &app {
            b = b.columns(a.columns.clone());
        }
        let app_references = app.as_ref().map_or(&[][..], |a| &a.references[..]);
        if !self.references.is_empty() || !app_references.is_empty() || !self.udfs.is_empty() {
            let given: Vec<ReferenceConfig> = self
                .references
                .iter()
                .map(|(name, path)| ReferenceConfig {
                    name: name.clone(),
                    path: path.clone(),
                    format: None,
                    region: None,
                    endpoint_url: None,
                })
                .collect();
            let functions = reference_tables(&given, app_references, &|p| p.to_path_buf())
                .await
                .map_err(|(name, e)| Error::config("--reference", format!("{name}: {e}")))?;
            b = b.functions(self.with_udfs(functions).await?);
        }
        if let Some(r) = &self.rowtime {
            b = b.rowtime_field(r.clone());
        }
        b = match &self.output_dir {
            None => {
                // The last statement's stream: DESTINATION_SQL_STREAM when there is a SELECT.
                let streams = crate::sql::output_stream_names(&sql)?;
                let main = if streams.iter().any(|s| s == crate::DESTINATION_STREAM) {
                    crate::DESTINATION_STREAM.to_owned()
                } else {
                    streams.last().cloned().unwrap_or_default()
                };
                b.sink_for(main, StdoutSink::new(OutputFormat::JsonLines))
            }
            Some(dir) => {
                for stream in crate::sql::output_stream_names(&sql)? {
                    let file = FileSink::builder(dir.join(format!("{stream}.ndjson")))
                        .with_truncate(true)
                        .build()?;
                    b = b.sink_for(stream, file);
                }
                b.error_output(
                    FileSink::builder(dir.join(format!("{}.ndjson", crate::ERROR_STREAM)))
                        .with_truncate(true)
                        .build()?,
                )
            }
        };
        b.build().await
    }

    /// `functions` with those of the `--udf` modules added.
    async fn with_udfs(&self, functions: crate::SqlFunctions) -> Result<crate::SqlFunctions> {
        #[cfg(feature = "wasm")]
        {
            let mut functions = functions;
            for path in &self.udfs {
                let location = path.display().to_string();
                let module =
                    crate::wasm::WasmModule::load(&location, crate::wasm::WasmLimits::default())
                        .await
                        .map_err(|e| Error::config("--udf", format!("{location}: {e}")))?;
                functions = module.add_to(functions);
            }
            Ok(functions)
        }
        #[cfg(not(feature = "wasm"))]
        match self.udfs.first() {
            None => Ok(functions),
            Some(p) => Err(Error::config(
                "--udf",
                format!(
                    "{}: WASM functions need rivulet built with the `wasm` feature",
                    p.display()
                ),
            )),
        }
    }
}
