//! WASM functions from SQL: the example UDFs built from `udfs/` (by `scripts/build-udfs.sh`)
//! against the same functions written natively, and the hostile guests of `udfs/hostile/`
//! contained.

use std::path::PathBuf;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use rivulet::wasm::{WasmLimits, WasmModule};
use rivulet::{FileSource, MemorySink, Pipeline, RecordFormat};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A module built from `udfs/` into `udfs/build/`, or `None` (test skipped) when the UDFs were not
/// built and CI does not require them.
pub(crate) fn built(name: &str) -> Option<PathBuf> {
    let path = repo().join("udfs/build").join(format!("{name}.wasm"));
    if path.exists() {
        return Some(path);
    }
    let required = std::env::var("RIVULET_REQUIRE_UDFS").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(
        !required,
        "{} is missing: run scripts/build-udfs.sh",
        path.display()
    );
    eprintln!(
        "skipping: {} not built (scripts/build-udfs.sh)",
        path.display()
    );
    None
}

fn hostile(name: &str) -> WasmModule {
    let path = repo().join("udfs/hostile").join(format!("{name}.wat"));
    let text = std::fs::read(&path).unwrap();
    WasmModule::from_bytes(name, &text, WasmLimits::default()).unwrap()
}

/// Runs `sql` over the JSON lines `input` (micro-batches of `batch_rows`) with `module`'s
/// functions; returns the output rows and the error rows.
async fn run(
    module: &WasmModule,
    input: &str,
    sql: &str,
    batch_rows: usize,
) -> (Vec<RecordBatch>, Vec<RecordBatch>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    std::fs::write(&path, input).unwrap();
    let out = MemorySink::new();
    let rows = out.handle();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    Pipeline::builder()
        .source(FileSource::builder(&path).build().unwrap())
        .format(RecordFormat::Json)
        .functions(module.sql_functions())
        .sql(sql)
        .sink(out)
        .error_output(errors)
        .batch_settings(rivulet::BatchSettings {
            max_rows: batch_rows,
            ..rivulet::BatchSettings::default()
        })
        .build()
        .await
        .unwrap()
        .run()
        .await
        .expect("the pipeline keeps running");
    (rows.batches(), error_rows.batches())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haversine_from_sql_matches_the_native_function_with_nulls() {
    let Some(path) = built("haversine") else {
        return;
    };
    let module = WasmModule::load(path.to_str().unwrap(), WasmLimits::default())
        .await
        .unwrap();
    assert_eq!(module.functions()[0].name, "haversine_km");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut lines = String::new();
    let mut expected = Vec::new();
    for id in 0..5000 {
        let coords: Vec<Option<f64>> = (0..4)
            .map(|k| {
                (rng.u8(..) > 12).then(|| {
                    let range = if k % 2 == 0 { 180.0 } else { 360.0 };
                    rng.f64() * range - range / 2.0
                })
            })
            .collect();
        let json = |v: Option<f64>| v.map_or("null".to_owned(), |x| format!("{x:?}"));
        lines.push_str(&format!(
            "{{\"id\":{id},\"a\":{},\"b\":{},\"c\":{},\"d\":{}}}\n",
            json(coords[0]),
            json(coords[1]),
            json(coords[2]),
            json(coords[3])
        ));
        expected.push(match coords[..] {
            [Some(a), Some(b), Some(c), Some(d)] => Some(haversine::haversine_km(a, b, c, d)),
            _ => None,
        });
    }
    let (out, errors) = run(
        &module,
        &lines,
        "SELECT id, haversine_km(a, b, c, d) AS km FROM source",
        1000,
    )
    .await;
    assert!(errors.is_empty(), "no errors");
    let mut got = Vec::new();
    for b in &out {
        let km = b.column(1).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            got.push((!km.is_null(i)).then(|| km.value(i)));
        }
    }
    assert_eq!(got.len(), expected.len());
    let mut nulls = 0;
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        match (g, e) {
            // The same code compiled to wasm32 and natively; the two targets' `sin`/`cos` (libm in
            // the guest, the C library natively) may differ in the last bits.
            (Some(g), Some(e)) => {
                assert!(
                    (g - e).abs() <= 1e-12 * e.abs().max(1.0),
                    "row {i}: {g} vs {e}"
                )
            }
            (None, None) => nulls += 1,
            _ => panic!("row {i}: {g:?} vs {e:?}"),
        }
    }
    assert!(nulls > 100, "NULL inputs give NULL: {nulls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mask_pii_masks_text_from_sql() {
    let Some(path) = built("mask_pii") else {
        return;
    };
    let module = WasmModule::load(path.to_str().unwrap(), WasmLimits::default())
        .await
        .unwrap();
    let input = [
        r#"{"m":"write to jane.doe@example.com now"}"#,
        r#"{"m":"call +1 (555) 123-4567"}"#,
        r#"{"m":""}"#,
        r#"{"m":null}"#,
        r#"{"m":"order 12345 is late ✓"}"#,
    ];
    let mut rng = fastrand::Rng::with_seed(11);
    let alphabet: Vec<char> = "ab.@ 0123456789+-()é✓".chars().collect();
    let random: Vec<String> = (0..300)
        .map(|_| {
            (0..rng.usize(0..40))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect()
        })
        .collect();
    let input: String = input
        .iter()
        .map(|l| format!("{l}\n"))
        .chain(
            random
                .iter()
                .map(|t| format!("{}\n", serde_json::json!({ "m": t }))),
        )
        .collect();
    let (out, errors) = run(&module, &input, "SELECT mask_pii(m) AS m FROM source", 100).await;
    assert!(errors.is_empty());
    let mut got: Vec<Option<&str>> = Vec::new();
    for b in &out {
        let col = b.column(0).as_string::<i32>();
        got.extend((0..col.len()).map(|i| (!col.is_null(i)).then(|| col.value(i))));
    }
    assert_eq!(got.len(), 305);
    assert_eq!(
        got[..5],
        vec![
            Some("write to j***@example.com now"),
            Some("call ***67"),
            Some(""),
            None,
            Some("order 12345 is late ✓"),
        ]
    );
    // Random text through WASM equals the native build's result.
    for (t, g) in random.iter().zip(&got[5..]) {
        assert_eq!(Some(mask_pii::mask_pii(t).as_str()), *g, "{t:?}");
    }
}

/// 100 rows in batches of 10; the function is called only for rows with `x > 50` (batches 6 to
/// 10), through a CASE.
fn hundred_rows() -> String {
    (1..=100).map(|i| format!("{{\"x\":{i}}}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_guest_fails_only_its_batches_and_the_pipeline_goes_on() {
    // Each guest with what stops it. The memory bomb is stopped by the memory cap, unless the
    // machine is so loaded that its 64 MiB of writes outlast the 100 ms deadline first: either
    // limit contains it, and which one comes first is the machine's timing, not rivulet's.
    for (guest, reasons) in [
        ("infinite_loop", &["deadline"][..]),
        ("memory_bomb", &["memory", "deadline"][..]),
        ("deep_recursion", &["stack overflow"][..]),
        ("trap", &["unreachable"][..]),
        ("wrong_length", &["bytes of values"][..]),
        ("out_of_bounds", &["outside the guest's memory"][..]),
        (
            "table_bomb",
            &["table would pass its limit of 100000 elements"][..],
        ),
    ] {
        let module = hostile(guest);
        let (out, errors) = run(
            &module,
            &hundred_rows(),
            "SELECT x, CASE WHEN x > 50 THEN f(CAST(x AS DOUBLE)) ELSE 0.0 END AS y FROM source",
            10,
        )
        .await;
        let ok: usize = out.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(
            ok, 50,
            "{guest}: the batches that never call it are untouched"
        );
        let failed: usize = errors.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(
            failed, 50,
            "{guest}: every row of a failed batch, in the error output"
        );
        for b in &errors {
            let msg = b.column_by_name("errorMessage").unwrap().as_string::<i32>();
            for i in 0..b.num_rows() {
                assert!(
                    reasons.iter().any(|r| msg.value(i).contains(r)),
                    "{guest}: {}",
                    msg.value(i)
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_instance_is_replaced_and_later_batches_run() {
    let module = hostile("trap_on_negative");
    // Batch 3 (rows 21..=30) holds a negative value and traps; the others are doubled.
    let input: String = (1..=100)
        .map(|i| format!("{{\"x\":{}}}\n", if i == 25 { -1 } else { i }))
        .collect();
    let (out, errors) = run(
        &module,
        &input,
        "SELECT f(CAST(x AS DOUBLE)) AS y FROM source",
        10,
    )
    .await;
    let mut ys = Vec::new();
    for b in &out {
        let y = b.column(0).as_primitive::<Float64Type>();
        ys.extend((0..y.len()).map(|i| y.value(i)));
    }
    assert_eq!(ys.len(), 90);
    assert!(
        ys.contains(&200.0) && ys.contains(&62.0),
        "batches after the trap ran"
    );
    let failed: usize = errors.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(failed, 10);
}

#[test]
fn a_module_with_more_memories_than_one_is_refused_at_load() {
    let text = std::fs::read(repo().join("udfs/hostile/many_memories.wat")).unwrap();
    let err = WasmModule::from_bytes("many_memories", &text, WasmLimits::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be compiled") && err.contains("memor"),
        "{err}"
    );
}

#[test]
fn a_module_importing_anything_is_refused_at_load() {
    let text = std::fs::read(repo().join("udfs/hostile/imports_wasi.wat")).unwrap();
    let err = WasmModule::from_bytes("imports_wasi", &text, WasmLimits::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("wasi_snapshot_preview1::fd_write") && msg.contains("no imports"),
        "{msg}"
    );
}

#[test]
fn fuel_limits_a_guest_deterministically() {
    let text = std::fs::read(repo().join("udfs/hostile/infinite_loop.wat")).unwrap();
    let limits = WasmLimits {
        fuel: Some(1_000_000),
        deadline: std::time::Duration::from_secs(60),
        ..WasmLimits::default()
    };
    let module = WasmModule::from_bytes("loop", &text, limits).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (out, errors) = rt.block_on(run(
        &module,
        "{\"x\":1}\n",
        "SELECT f(CAST(x AS DOUBLE)) AS y FROM source",
        10,
    ));
    assert!(out.iter().all(|b| b.num_rows() == 0));
    let msg = errors[0]
        .column_by_name("errorMessage")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_owned();
    assert!(msg.contains("fuel"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_file_loads_udfs_and_calls_them_from_sql() {
    let Some(path) = built("haversine") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.ndjson"),
        "{\"lat\":52.52,\"lon\":13.405}\n{\"lat\":48.8566,\"lon\":2.3522}\n",
    )
    .unwrap();
    let config = dir.path().join("distances.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
type = "file"
path = "in.ndjson"

[query]
sql = "SELECT ROUND(haversine_km(lat, lon, 52.52, 13.405), 1) AS km FROM source"

[[udfs]]
path = "{}"
deadline_ms = 250

[[sinks]]
type = "file"
path = "out.ndjson"
"#,
            path.display()
        ),
    )
    .unwrap();
    let report = rivulet::PipelineConfig::from_file(&config)
        .unwrap()
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.metrics.records_error, 0);
    let out = std::fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    assert_eq!(out, "{\"km\":0.0}\n{\"km\":877.5}\n");

    // A module that imports something is refused with the key that names it.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap().replace(
            &path.display().to_string(),
            &repo()
                .join("udfs/hostile/imports_wasi.wat")
                .display()
                .to_string(),
        ),
    )
    .unwrap();
    let err = rivulet::PipelineConfig::from_file(&config)
        .unwrap()
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("udfs[0].path") && err.contains("imports"),
        "{err}"
    );
}

#[test]
fn compiled_modules_are_cached_on_disk_and_a_damaged_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let limits = WasmLimits {
        cache_dir: Some(dir.path().join("cache")),
        ..WasmLimits::default()
    };
    let text = std::fs::read(repo().join("udfs/hostile/trap_on_negative.wat")).unwrap();
    WasmModule::from_bytes("double", &text, limits.clone()).unwrap();
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].extension().unwrap(), "cwasm");

    // From the cache, the module works the same.
    let cached = WasmModule::from_bytes("double", &text, limits.clone()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (out, _) = rt.block_on(run(
        &cached,
        "{\"x\":4}\n",
        "SELECT f(x) AS y FROM source",
        10,
    ));
    assert_eq!(out[0].column(0).as_primitive::<Float64Type>().value(0), 8.0);

    // A damaged entry is not trusted: the module is compiled again.
    drop(cached);
    std::fs::write(&entries[0], b"not a compiled module").unwrap();
    WasmModule::from_bytes("double", &text, limits).unwrap();
    assert!(std::fs::read(&entries[0]).unwrap().len() > 100, "rewritten");
}

#[cfg(unix)]
#[test]
fn a_cache_entry_others_could_have_written_is_never_loaded() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let entry_of = |dir: &std::path::Path| -> PathBuf {
        let entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries[0].clone()
    };
    let limits = |dir: &std::path::Path| WasmLimits {
        cache_dir: Some(dir.to_owned()),
        ..WasmLimits::default()
    };
    let doubler = std::fs::read(repo().join("udfs/hostile/trap_on_negative.wat")).unwrap();
    let other = std::fs::read(repo().join("udfs/hostile/huge_error.wat")).unwrap();
    let root = tempfile::tempdir().unwrap();
    // The doubler's entry name, and the compiled code of another module with the same signature,
    // `f(f64) -> f64`, that fails every call: what a planted entry would run.
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    WasmModule::from_bytes("double", &doubler, limits(&a)).unwrap();
    WasmModule::from_bytes("other", &other, limits(&b)).unwrap();
    let (key, planted) = (
        entry_of(&a).file_name().unwrap().to_owned(),
        std::fs::read(entry_of(&b)).unwrap(),
    );
    assert_eq!(
        std::fs::metadata(&a).unwrap().permissions().mode() & 0o777,
        0o700,
        "a cache directory rivulet creates is its user's alone"
    );
    assert_eq!(
        std::fs::metadata(entry_of(&a))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let doubles = |module: &WasmModule| -> bool {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (out, errors) = rt.block_on(run(
            module,
            "{\"x\":4}\n",
            "SELECT f(x) AS y FROM source",
            10,
        ));
        let ok = out.iter().any(|b| b.num_rows() == 1);
        assert!(ok != errors.iter().any(|b| b.num_rows() == 1));
        ok && out[0].column(0).as_primitive::<Float64Type>().value(0) == 8.0
    };

    // In a private directory, a planted entry is loaded: what the checks below guard.
    let private = root.path().join("private");
    std::fs::create_dir(&private).unwrap();
    mode(&private, 0o700);
    std::fs::write(private.join(&key), &planted).unwrap();
    mode(&private.join(&key), 0o600);
    assert!(!doubles(
        &WasmModule::from_bytes("double", &doubler, limits(&private)).unwrap()
    ));

    // A directory other users can write: nothing in it is loaded, and nothing is written to it.
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join(&key), &planted).unwrap();
    mode(&shared.join(&key), 0o600);
    mode(&shared, 0o777);
    let module = WasmModule::from_bytes("double", &doubler, limits(&shared)).unwrap();
    assert!(
        doubles(&module),
        "the planted entry in a shared directory ran"
    );
    assert_eq!(std::fs::read(shared.join(&key)).unwrap(), planted);
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 1);

    // An entry other users can write, in a private directory: compiled again and replaced by a
    // private entry.
    mode(&shared, 0o700);
    mode(&shared.join(&key), 0o666);
    let module = WasmModule::from_bytes("double", &doubler, limits(&shared)).unwrap();
    assert!(doubles(&module), "a group- and world-writable entry ran");
    assert_ne!(std::fs::read(shared.join(&key)).unwrap(), planted);
    assert_eq!(
        std::fs::metadata(shared.join(&key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_agent_parsers_from_sql_match_the_native_functions() {
    let Some(path) = built("user_agent") else {
        return;
    };
    let module = WasmModule::load(path.to_str().unwrap(), WasmLimits::default())
        .await
        .unwrap();
    let pieces = [
        "Mozilla/5.0 ",
        "(Windows NT 10.0; Win64; x64) ",
        "(Macintosh; Intel Mac OS X 14_5) ",
        "(iPhone; CPU iPhone OS 17_5 like Mac OS X) ",
        "(Linux; Android 14) ",
        "(X11; CrOS x86_64) ",
        "AppleWebKit/537.36 (KHTML, like Gecko) ",
        "Chrome/126.0.0.0 ",
        "Safari/537.36 ",
        "Version/17.5 ",
        "Edg/126.0 ",
        "OPR/110.0 ",
        "Firefox/",
        "128.0",
        "Googlebot/2.1 ",
        "curl/8.5.0",
        "é✓ ",
        "",
    ];
    let mut rng = fastrand::Rng::with_seed(23);
    let agents: Vec<Option<String>> = (0..2000)
        .map(|_| {
            (rng.u8(..15) > 0).then(|| {
                (0..rng.usize(0..6))
                    .map(|_| pieces[rng.usize(..pieces.len())])
                    .collect()
            })
        })
        .collect();
    let input: String = agents
        .iter()
        .map(|a| format!("{}\n", serde_json::json!({ "ua": a })))
        .collect();
    let (out, errors) = run(
        &module,
        &input,
        "SELECT ua_browser(ua) AS b, ua_os(ua) AS os, ua_is_bot(ua) AS bot FROM source",
        500,
    )
    .await;
    assert!(errors.is_empty());
    let mut i = 0;
    let mut browsers = std::collections::BTreeSet::new();
    for b in &out {
        let (br, os, bot) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
            b.column(2).as_boolean(),
        );
        for r in 0..b.num_rows() {
            match &agents[i] {
                Some(a) => {
                    assert_eq!(br.value(r), user_agent::ua_browser(a), "{a:?}");
                    assert_eq!(os.value(r), user_agent::ua_os(a), "{a:?}");
                    assert_eq!(bot.value(r), user_agent::ua_is_bot(a), "{a:?}");
                    browsers.insert(br.value(r).to_owned());
                }
                None => assert!(br.is_null(r) && os.is_null(r) && bot.is_null(r)),
            }
            i += 1;
        }
    }
    assert_eq!(i, agents.len());
    assert!(browsers.len() >= 5, "{browsers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_error_message_is_cut_to_a_kilobyte() {
    let module = hostile("huge_error");
    let (out, errors) = run(
        &module,
        &hundred_rows(),
        "SELECT f(CAST(x AS DOUBLE)) AS y FROM source",
        50,
    )
    .await;
    assert!(out.iter().all(|b| b.num_rows() == 0));
    let failed: usize = errors.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(failed, 100);
    for b in &errors {
        let msg = b.column_by_name("errorMessage").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            let m = msg.value(i);
            assert!(m.len() < 1200, "{} bytes", m.len());
            assert!(m.contains("33423360 bytes in all"), "{m}");
        }
    }
}

/// Runs a windowed aggregate of `state_bomb` (1 MiB of state per group from every update) over 100
/// rows of 10 keys in batches of 10; returns the output rows and the error rows.
async fn state_bomb_run(limits: WasmLimits) -> (Vec<RecordBatch>, Vec<RecordBatch>) {
    use arrow::datatypes::{DataType, TimeUnit};
    let text = std::fs::read(repo().join("udfs/hostile/state_bomb.wat")).unwrap();
    let module = WasmModule::from_bytes("state_bomb", &text, limits).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    let input: String = (0..100)
        .map(|i| {
            format!(
                "{{\"k\":\"k{}\",\"x\":{i},\"t\":{}}}\n",
                i % 10,
                1_767_225_600_000i64 + i
            )
        })
        .collect();
    std::fs::write(&path, input).unwrap();
    let out = MemorySink::new();
    let rows = out.handle();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    Pipeline::builder()
        .source(FileSource::builder(&path).build().unwrap())
        .format(RecordFormat::Json)
        .columns(vec![
            rivulet::Column::new("k", DataType::Utf8),
            rivulet::Column::new("x", DataType::Float64),
            rivulet::Column::new(
                "t",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            ),
        ])
        .functions(module.sql_functions())
        .sql(
            "SELECT k, f(x) AS y, COUNT(*) AS n FROM source \
             GROUP BY k, TUMBLE(t, INTERVAL '1' MINUTE)",
        )
        .sink(out)
        .error_output(errors)
        .batch_settings(rivulet::BatchSettings {
            max_rows: 10,
            ..rivulet::BatchSettings::default()
        })
        .build()
        .await
        .unwrap()
        .run()
        .await
        .expect("the pipeline keeps running");
    (rows.batches(), error_rows.batches())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_state_over_the_limit_fails_its_batch_and_nothing_is_kept() {
    let (out, errors) = state_bomb_run(WasmLimits::default()).await;
    let ok: usize = out.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(ok, 0, "no group kept a state, so no window has a row");
    let failed: usize = errors.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(failed, 100, "every row, in the error output");
    for b in &errors {
        let msg = b.column_by_name("errorMessage").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            assert!(
                msg.value(i).contains("1048576 bytes") && msg.value(i).contains("max_state_bytes"),
                "{}",
                msg.value(i)
            );
        }
    }
    // The same guest under a limit its states fit: every key's window, no error.
    let (out, errors) = state_bomb_run(WasmLimits {
        max_state_bytes: 2 << 20,
        ..WasmLimits::default()
    })
    .await;
    assert_eq!(errors.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    let counts: Vec<i64> = out
        .iter()
        .flat_map(|b| {
            b.column_by_name("n")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(counts, vec![10; 10], "one window per key, of its 10 rows");
}

/// `rivulet replay --udf` loads a module whose functions the query calls, as `[[udfs]]` does in a
/// pipeline file; without it the query names an unknown function and fails.
#[test]
fn replay_with_udf_calls_the_modules_functions() {
    let Some(module) = built("haversine") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("points.ndjson");
    std::fs::write(
        &input,
        "{\"id\":1,\"lat\":0.0,\"lon\":90.0}\n{\"id\":2,\"lat\":0.0,\"lon\":0.0}\n\
         {\"id\":3,\"lat\":90.0,\"lon\":45.0}\n",
    )
    .unwrap();
    let sql = dir.path().join("query.sql");
    std::fs::write(
        &sql,
        "SELECT id, haversine_km(lat, lon, 0.0, 0.0) AS km FROM source",
    )
    .unwrap();
    let replay = |udf: Option<&PathBuf>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"));
        cmd.args(["replay", "--sql"])
            .arg(&sql)
            .arg("--input")
            .arg(&input);
        if let Some(m) = udf {
            cmd.arg("--udf").arg(m);
        }
        cmd.output().unwrap()
    };
    let out = replay(Some(&module));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // A quarter of a great circle of the mean Earth radius, none, and pole to equator.
    let quarter = 6371.0088 * std::f64::consts::FRAC_PI_2;
    let want = [(1, quarter), (2, 0.0), (3, quarter)];
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (row, (id, km)) in rows.iter().zip(want) {
        assert_eq!(row["id"], id);
        let got = row["km"].as_f64().unwrap();
        assert!(
            (got - km).abs() < 1e-9 * quarter,
            "{id}: {got} km, want {km}"
        );
    }
    let out = replay(None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("haversine_km"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
