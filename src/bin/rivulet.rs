//! The `rivulet` command line: run a pipeline file, or replay a captured file through a query.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rivulet::{
    Error, Pipeline, PipelineConfig, PipelineMetrics, ReplayOptions, SourceHealth,
    WatermarkSettings,
};

#[derive(Parser, Debug)]
#[command(
    name = "rivulet",
    version,
    about = "Streaming SQL over AWS data streams, files and generated data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a pipeline described by a TOML file until stopped (Ctrl-C) or until a finite source ends.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Seconds between progress lines on standard error (0: none).
        #[arg(long, default_value_t = 2.0)]
        progress_interval: f64,
    },
    /// Replays a captured file as a stream through a query and writes the output as JSON lines.
    Replay {
        #[command(flatten)]
        query: QueryArgs,
        /// Writes one <STREAM>.ndjson per output stream (and error_stream.ndjson) here instead of
        /// printing the main stream to standard output.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Prints the streaming plan of a query: what runs per batch, what is windowed, on which time
    /// column, with which lateness. The input file gives the schema.
    Explain {
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Samples records (JSON lines or CSV) and proposes the input's columns with KDA's SQL types
    /// and JSON mappings, as Kinesis Data Analytics' DiscoverInputSchema did.
    DiscoverSchema {
        /// The records.
        #[arg(long)]
        input: PathBuf,
        /// Format of the input.
        #[arg(long, value_enum, default_value_t = InputFormat::Json)]
        input_format: InputFormat,
        /// The CSV's first row names the columns.
        #[arg(long)]
        header: bool,
        /// Records to sample.
        #[arg(long, default_value_t = 1000)]
        sample: usize,
        /// `table`, or `json`: KDA's InputSchema, which `rivulet replay --app` loads.
        #[arg(long, value_enum, default_value_t = SchemaOutput::Table)]
        format: SchemaOutput,
    },
    /// Decrypts output sealed with KMS envelope encryption (a file, standard input, or an S3
    /// object: one envelope or several written one after another) and writes the plaintext.
    #[cfg(feature = "aws")]
    Decrypt {
        /// A file, `-` for standard input, or `s3://bucket/key`.
        input: String,
        /// Where to write the plaintext (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Requires this KMS key (id, ARN or alias) to have encrypted the data keys.
        #[arg(long)]
        key_id: Option<String>,
        /// Requires this encryption-context pair, as `key=value` (repeatable), e.g.
        /// `rivulet:stream=DESTINATION_SQL_STREAM`.
        #[arg(long = "context", value_parser = parse_pair)]
        context: Vec<(String, String)>,
        /// Decompresses gzip, zstd or snappy (framed) plaintext, recognised by its magic bytes.
        #[arg(long)]
        decompress: bool,
        /// AWS region (default: from the environment or profile).
        #[arg(long)]
        region: Option<String>,
        /// Endpoint URL of KMS and S3 (an emulator, a VPC endpoint).
        #[arg(long)]
        endpoint_url: Option<String>,
    },
    /// Measures a pipeline on synthetic load: throughput, production-to-commit latency
    /// percentiles, CPU seconds per million records and peak memory.
    Bench(BenchArgs),
    /// Provisions the pipeline's AWS resources from its `[setup]` table: streams, delivery
    /// streams, the bucket, a KMS key and least-privilege IAM roles.
    #[cfg(feature = "setup")]
    Setup {
        #[command(subcommand)]
        action: SetupAction,
    },
}

/// `rivulet bench` options.
#[derive(Args, Debug)]
struct BenchArgs {
    /// A pipeline file, run with the load in place of its source (its format JSON, its event-time
    /// member `event_time`). Without one, `--sql` (or the scenario's query) runs into a null sink.
    pipeline: Option<PathBuf>,
    /// The built-in load.
    #[arg(long, value_enum, default_value_t = ScenarioArg::Ticker)]
    scenario: ScenarioArg,
    /// The query (default: a 10-second tumbling window per key of the scenario).
    #[arg(long, conflicts_with = "pipeline")]
    sql: Option<String>,
    /// Records to produce (default 1,000,000 when no duration is given).
    #[arg(long)]
    records: Option<u64>,
    /// Seconds to run.
    #[arg(long)]
    duration_s: Option<f64>,
    /// Records per second (default: as fast as the pipeline takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct keys: tickers, cars or users (default 100, 1,000, 100,000).
    #[arg(long)]
    keys: Option<usize>,
    /// Pads each record to at least this many bytes.
    #[arg(long)]
    record_bytes: Option<usize>,
    /// Fraction of records whose event time is set back, up to `--lateness-ms`.
    #[arg(long, default_value_t = 0.0)]
    out_of_order: f64,
    /// How far an out-of-order record is set back at most.
    #[arg(long, default_value_t = 0)]
    lateness_ms: u64,
    /// The query's allowed lateness (default: `--lateness-ms`, so no record is late).
    #[arg(long, conflicts_with = "pipeline")]
    allowed_lateness_ms: Option<u64>,
    /// Without `--rate`: records per second of event time.
    #[arg(long, default_value_t = 10_000.0)]
    event_rate: f64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Prints the summary as JSON on standard output (the progress bar goes to standard error).
    #[arg(long)]
    json: bool,
    /// Prints the change against an earlier run's `--json` summary.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Produces the load into this Kinesis stream (which must exist) while the pipeline reads it
    /// with the Kinesis source: figures that include the source and the service.
    #[cfg(feature = "aws")]
    #[arg(long, value_name = "STREAM")]
    kinesis: Option<String>,
    /// Endpoint URL of Kinesis for `--kinesis` (an emulator, a VPC endpoint).
    #[cfg(feature = "aws")]
    #[arg(long, requires = "kinesis")]
    endpoint_url: Option<String>,
    /// AWS region for `--kinesis` (default: from the environment or profile).
    #[cfg(feature = "aws")]
    #[arg(long, requires = "kinesis")]
    region: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScenarioArg {
    Ticker,
    Car,
    Clickstream,
}

/// `rivulet setup` actions.
#[cfg(feature = "setup")]
#[derive(Subcommand, Debug)]
enum SetupAction {
    /// Prints what apply would create, change or leave alone, with every policy document.
    Plan {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Creates or updates the resources so that they are as planned (idempotent).
    Apply {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Removes what rivulet created for the pipeline (never what existed before).
    Destroy {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Writes the resources as a CloudFormation template (JSON) to standard output; reads nothing
    /// from AWS.
    Export {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The template format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Cloudformation)]
        format: ExportFormat,
    },
}

#[cfg(feature = "setup")]
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    Cloudformation,
}

#[cfg(feature = "aws")]
fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

#[derive(Args, Debug)]
struct QueryArgs {
    /// File holding the SQL (one or more statements separated by `;`), or Kinesis Data Analytics
    /// application code.
    #[arg(long, required_unless_present = "app")]
    sql: Option<PathBuf>,
    /// A Kinesis Data Analytics application file (DescribeApplication output, its InputSchema,
    /// or the original solution's YAML): the input's format and columns, and the application
    /// code unless --sql gives it.
    #[arg(long)]
    app: Option<PathBuf>,
    /// The captured input: NDJSON, or CSV with a header row.
    #[arg(long)]
    input: PathBuf,
    /// Format of the input.
    #[arg(long, value_enum, default_value_t = InputFormat::Json)]
    input_format: InputFormat,
    /// Input field holding each record's time (ISO-8601 or epoch milliseconds), used as ROWTIME.
    #[arg(long)]
    rowtime: Option<String>,
    /// How far behind the newest event time a row may arrive before its window is emitted.
    #[arg(long, default_value_t = 0)]
    lateness_ms: u64,
    /// A partition without rows for this long stops holding the watermark back.
    #[arg(long, default_value_t = 60_000)]
    idle_timeout_ms: u64,
    /// A reference table the SQL can join: NAME=PATH, a JSON-lines or CSV file (with a header
    /// row) or an s3:// URL. Repeatable.
    #[arg(long, value_parser = parse_reference)]
    reference: Vec<(String, String)>,
    /// A WASM module whose functions the SQL calls (built for wasm32, as `[[udfs]]` in a
    /// pipeline file), with the default limits. Repeatable.
    #[arg(long)]
    udf: Vec<PathBuf>,
    /// Threads that decode records side by side (default: every core the process may use).
    #[arg(long)]
    workers: Option<usize>,
}

fn parse_reference(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_owned(), path.to_owned()))
        }
        _ => Err(format!("`{s}` is not NAME=PATH")),
    }
}

impl QueryArgs {
    fn replay(self, output_dir: Option<PathBuf>) -> ReplayOptions {
        ReplayOptions {
            sql_file: self.sql,
            app: self.app,
            input: self.input,
            csv: matches!(self.input_format, InputFormat::Csv),
            rowtime: self.rowtime,
            output_dir,
            watermark: WatermarkSettings {
                allowed_lateness: Duration::from_millis(self.lateness_ms),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
                ..WatermarkSettings::default()
            },
            references: self.reference,
            udfs: self.udf,
            workers: self.workers,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemaOutput {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InputFormat {
    Json,
    Csv,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RIVULET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                Error::Config { .. } | Error::ConfigParse { .. } | Error::Sql(_) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(cli: Cli) -> rivulet::Result<()> {
    match cli.command {
        Command::Run {
            pipeline,
            progress_interval,
        } => {
            let config = PipelineConfig::from_file(&pipeline)?;
            let p = config.build().await?;
            let interval =
                (progress_interval > 0.0).then(|| Duration::from_secs_f64(progress_interval));
            drive(p, interval, Some(config.error_output_location())).await
        }
        Command::Bench(args) => bench(args).await,
        Command::Replay { query, output_dir } => {
            let p = query.replay(output_dir).build().await?;
            drive(p, None, None).await
        }
        Command::DiscoverSchema {
            input,
            input_format,
            header,
            sample,
            format,
        } => {
            let data = std::fs::read_to_string(&input).map_err(|e| rivulet::Error::Io {
                context: format!("reading {}", input.display()),
                source: e,
            })?;
            let csv = matches!(input_format, InputFormat::Csv);
            let columns = rivulet::discover::discover_schema(&data, csv, header, sample)?;
            match format {
                SchemaOutput::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&rivulet::discover::input_schema(&columns, csv))
                        .expect("a schema serialises")
                ),
                SchemaOutput::Table => {
                    let width = columns
                        .iter()
                        .map(|c| c.name.len())
                        .max()
                        .unwrap_or(4)
                        .max(4);
                    println!("{:<width$}  {:<14}  Mapping", "Name", "SqlType");
                    for c in &columns {
                        println!(
                            "{:<width$}  {:<14}  {}",
                            c.name,
                            c.sql_type,
                            c.mapping.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Explain { query } => {
            let p = query.replay(None).build().await?;
            print!("{}", p.program().explain());
            Ok(())
        }
        #[cfg(feature = "setup")]
        Command::Setup { action } => setup(action).await,
        #[cfg(feature = "aws")]
        Command::Decrypt {
            input,
            output,
            key_id,
            context,
            decompress,
            region,
            endpoint_url,
        } => {
            decrypt(
                &input,
                output,
                key_id,
                context,
                decompress,
                region,
                endpoint_url,
            )
            .await
        }
    }
}

#[cfg(feature = "aws")]
async fn decrypt(
    input: &str,
    output: Option<PathBuf>,
    key_id: Option<String>,
    context: Vec<(String, String)>,
    decompress: bool,
    region: Option<String>,
    endpoint_url: Option<String>,
) -> rivulet::Result<()> {
    use std::io::{Read as _, Write as _};
    let data: Vec<u8> = if let Some(rest) = input.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').ok_or_else(|| Error::Config {
            key: "input".into(),
            message: format!("`{input}` is not s3://bucket/key"),
        })?;
        rivulet::s3::get_object(bucket, key, region.clone(), endpoint_url.clone())
            .await?
            .to_vec()
    } else if input == "-" {
        let mut v = Vec::new();
        std::io::stdin()
            .read_to_end(&mut v)
            .map_err(|e| Error::Io {
                context: "reading standard input".into(),
                source: e,
            })?;
        v
    } else {
        std::fs::read(input).map_err(|e| Error::Io {
            context: format!("reading {input}"),
            source: e,
        })?
    };
    let provider = rivulet::crypto::KmsKeyProvider::new(
        key_id.clone().unwrap_or_default(),
        region,
        endpoint_url,
    )
    .await?;
    let mut dec = rivulet::crypto::EnvelopeDecryptor::new(Arc::new(provider));
    if let Some(k) = key_id {
        dec = dec.expect_key(k);
    }
    for (k, v) in context {
        dec = dec.expect_context(k, v);
    }
    let mut plain = dec.open_all(&data).await?;
    if decompress {
        plain = rivulet::s3::decompress(plain)?;
    }
    match output {
        Some(path) => std::fs::write(&path, &plain).map_err(|e| Error::Io {
            context: format!("writing {}", path.display()),
            source: e,
        }),
        None => std::io::stdout().write_all(&plain).map_err(|e| Error::Io {
            context: "writing standard output".into(),
            source: e,
        }),
    }
}

/// Runs a pipeline with signal handling and an optional progress line.
async fn drive(
    pipeline: Pipeline,
    progress: Option<Duration>,
    errors_to: Option<String>,
) -> rivulet::Result<()> {
    let handle = pipeline.shutdown_handle();
    let metrics = pipeline.metrics();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("rivulet: stopping; flushing sinks (press Ctrl-C again to abort)");
        handle.shutdown();
        wait_for_signal().await;
        // Multipart uploads in progress would stay open (and billed): abort them, briefly.
        #[cfg(feature = "aws")]
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            rivulet::s3::abort_uploads_in_progress(),
        )
        .await;
        eprintln!("rivulet: aborted");
        std::process::exit(130);
    });
    let health = pipeline.source_health();
    let printer = progress
        .map(|every| tokio::spawn(print_progress(Arc::clone(&metrics), health.clone(), every)));
    let result = pipeline.run().await;
    if let Some(p) = printer {
        p.abort();
    }
    let report = result?;
    if progress.is_some() {
        let m = report.metrics;
        let dropped = if m.records_dropped > 0 {
            format!(", {} dropped by the transform", m.records_dropped)
        } else {
            String::new()
        };
        eprintln!(
            "rivulet: done in {:.1}s: {} records in, {} rows out, {} errors{dropped}",
            report.elapsed.as_secs_f64(),
            m.records_in,
            m.rows_out,
            m.records_error
        );
    }
    if let (Some(to), true) = (errors_to, report.metrics.records_error > 0) {
        eprintln!(
            "rivulet: {} records went to the error output: {to}",
            report.metrics.records_error
        );
    }
    Ok(())
}

async fn print_progress(
    metrics: Arc<PipelineMetrics>,
    health: Option<Arc<SourceHealth>>,
    every: Duration,
) {
    let mut last = metrics.snapshot();
    let mut last_shards = health.as_ref().map(|h| h.partitions()).unwrap_or_default();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = metrics.snapshot();
        let rate = (now.records_in - last.records_in) as f64 / every.as_secs_f64();
        let source = match &health {
            None => String::new(),
            Some(h) => {
                let shards = h.partitions();
                let open: Vec<String> = shards
                    .iter()
                    .filter(|(_, s)| !s.finished)
                    .map(|(id, s)| {
                        let before = last_shards.get(id).map_or(0, |b| b.records);
                        let lag = s
                            .millis_behind
                            .map_or_else(|| "?".to_owned(), |l| l.to_string());
                        format!(
                            "{id} {:.0}/s lag {lag} ms throttled {}{}",
                            (s.records - before) as f64 / every.as_secs_f64(),
                            s.throttles,
                            if s.paused { " paused (ahead)" } else { "" }
                        )
                    })
                    .collect();
                last_shards = shards;
                // Shard by shard while that fits on a line; a summary beyond.
                if open.len() <= 4 {
                    format!("; {}", open.join(", "))
                } else {
                    format!("; {}", h.summary())
                }
            }
        };
        eprintln!(
            "rivulet: {} records in ({:.0}/s), {} rows out, {} errors ({} late), {} window states, \
             {} checkpoints{source}",
            now.records_in,
            rate,
            now.rows_out,
            now.records_error,
            now.rows_late,
            now.window_states,
            now.checkpoints
        );
        last = now;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(feature = "setup")]
async fn setup(action: SetupAction) -> rivulet::Result<()> {
    match action {
        SetupAction::Plan { pipeline } => {
            let plan = rivulet::setup::Plan::new(&PipelineConfig::from_file(&pipeline)?).await?;
            print!("{}", plan.render());
            if !plan.has_changes() {
                println!("nothing to change");
            }
        }
        SetupAction::Apply { pipeline } => {
            let report = rivulet::setup::apply(&PipelineConfig::from_file(&pipeline)?).await?;
            print_changes(&report.changes, "nothing to change");
        }
        SetupAction::Destroy { pipeline } => {
            let report = rivulet::setup::destroy(&PipelineConfig::from_file(&pipeline)?).await?;
            print_changes(&report.changes, "nothing to remove");
        }
        SetupAction::Export { pipeline, format } => {
            let ExportFormat::Cloudformation = format;
            let plan = rivulet::setup::Plan::offline(&PipelineConfig::from_file(&pipeline)?)?;
            for n in &plan.notes {
                eprintln!("note: {n}");
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&rivulet::setup::cloudformation(&plan))
                    .expect("a template serialises")
            );
        }
    }
    Ok(())
}

/// `rivulet bench`: runs the load with a progress bar, then prints the summary.
async fn bench(args: BenchArgs) -> rivulet::Result<()> {
    use rivulet::bench::{compare, Bench, BenchSummary, LoadOptions, Scenario};
    let earlier = args
        .compare
        .as_ref()
        .map(BenchSummary::from_json_file)
        .transpose()?;
    let load = LoadOptions {
        scenario: match args.scenario {
            ScenarioArg::Ticker => Scenario::Ticker,
            ScenarioArg::Car => Scenario::Car,
            ScenarioArg::Clickstream => Scenario::Clickstream,
        },
        rate: args.rate,
        records: args.records,
        duration: args.duration_s.map(Duration::from_secs_f64),
        keys: args.keys,
        record_bytes: args.record_bytes,
        out_of_order: args.out_of_order,
        lateness: Duration::from_millis(args.lateness_ms),
        event_rate: args.event_rate,
        seed: args.seed,
    };
    let total = load
        .records
        .or(load.duration.is_none().then_some(1_000_000));
    let mut bench = Bench::new(load);
    if let Some(path) = &args.pipeline {
        bench = bench.pipeline(PipelineConfig::from_file(path)?);
    }
    if let Some(sql) = &args.sql {
        bench = bench.sql(sql.clone());
    }
    if let Some(ms) = args.allowed_lateness_ms {
        bench = bench.allowed_lateness(Duration::from_millis(ms));
    }
    #[cfg(feature = "aws")]
    if let Some(stream) = &args.kinesis {
        let mut target = rivulet::bench::KinesisLoad::new(stream.clone());
        if let Some(url) = &args.endpoint_url {
            target = target.endpoint_url(url.clone());
        }
        if let Some(region) = &args.region {
            target = target.region(region.clone());
        }
        bench = bench.kinesis(target);
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos} records ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let shown = bar.clone();
    let summary = bench
        .run_with_progress(move |m| {
            let s = m.snapshot();
            shown.set_position(s.records_in);
            shown.set_message(format!(
                "{} rows out, {} errors",
                s.rows_out, s.records_error
            ));
        })
        .await;
    bar.finish_and_clear();
    let summary = summary?;
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print_summary(&summary);
    }
    if let Some(earlier) = earlier {
        let lines = compare(&earlier, &summary);
        let out: &mut dyn std::io::Write = if args.json {
            &mut std::io::stderr()
        } else {
            &mut std::io::stdout()
        };
        let path = args.compare.as_ref().map(|p| p.display().to_string());
        let _ = writeln!(out, "\nchange against {}:", path.unwrap_or_default());
        for line in lines {
            let _ = writeln!(out, "  {line}");
        }
    }
    Ok(())
}

fn print_summary(s: &rivulet::bench::BenchSummary) {
    println!("scenario      {:?}", s.scenario);
    println!("query         {}", s.query);
    println!(
        "records       {} in {:.2} s: {:.0} records/s, {:.1} MB/s",
        s.records, s.elapsed_s, s.records_per_s, s.mb_per_s
    );
    println!(
        "rows out      {} ({} errors, {} late; {} records uncommitted at the end)",
        s.rows_out, s.errors, s.late, s.uncommitted
    );
    println!(
        "latency       p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms ({} records, production to commit)",
        s.latency_ms.p50, s.latency_ms.p99, s.latency_ms.p99_9, s.latency_ms.max, s.latency_records
    );
    println!(
        "cpu           {:.2} s, {:.3} s per million records",
        s.cpu_s, s.cpu_s_per_million
    );
    println!("peak rss      {:.1} MiB", s.peak_rss_mib);
    if let Some(stream) = &s.kinesis_stream {
        println!("through       Kinesis stream {stream} (latency from arrival in the stream)");
    }
}

/// What `setup apply` or `destroy` did, a line each, or `none` when it did nothing.
#[cfg(feature = "setup")]
fn print_changes(changes: &[impl std::fmt::Display], none: &str) {
    if changes.is_empty() {
        println!("{none}");
    }
    for c in changes {
        println!("{c}");
    }
}
