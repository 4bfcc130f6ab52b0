//! Fuzz targets for the parsers of data rivulet does not control, and the stable driver that runs
//! them (`scripts/fuzz.sh`; CI runs a short budget).
//!
//! Each target takes bytes and must not panic, hang or break its invariants. The driver first
//! replays every input in `fuzz/regressions/<target>/` (inputs that once broke a target, kept as
//! regression tests), then mutates a seed corpus (records, files and SQL from the repository, and
//! the target's own encoders): in a test run, a fixed number of inputs per target from a fixed seed, the same on
//! every machine; with `RIVULET_FUZZ_SECONDS` (what `scripts/fuzz.sh` sets), random inputs for that
//! long per target, and `RIVULET_FUZZ_SEED` to repeat a run. Mutations flip bits, overwrite, insert, delete and
//! duplicate ranges, splice two inputs and insert tokens of the target's syntax. An input that
//! panics is written to `fuzz/crashes/<target>/` and fails the run with its path; copied into
//! `fuzz/regressions/<target>/` it is replayed from then on.
//!
//! There is no coverage feedback (that needs a nightly toolchain and `cargo fuzz`); the
//! structure-aware seeds and tokens make up part of it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How long a target is fuzzed: `RIVULET_FUZZ_SECONDS` of random inputs (what
/// `scripts/fuzz.sh` sets), or else a fixed number of inputs from a fixed seed, so that a test
/// run is the same on every machine and a failure in CI is one anybody can repeat.
enum Budget {
    Time(Duration),
    Inputs(u64),
}

/// Inputs per target in a test run (a few seconds of a debug build each).
const TEST_INPUTS: u64 = 10_000;
/// Inputs in a test run for a target that builds a decoder per input.
const TEST_INPUTS_SLOW: u64 = 500;
/// The seed of a test run (any seed works; this one is fixed so that runs repeat).
const TEST_SEED: u64 = 0x7269_7675_6c65_7421;

fn budget(test_inputs: u64) -> Budget {
    match std::env::var("RIVULET_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        Some(secs) => Budget::Time(Duration::from_secs_f64(secs)),
        None => Budget::Inputs(test_inputs),
    }
}

fn seed(budget: &Budget) -> u64 {
    std::env::var("RIVULET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| match budget {
            Budget::Time(_) => fastrand::u64(..),
            Budget::Inputs(_) => TEST_SEED,
        })
}

/// Every file's bytes under `dir` (none when it does not exist).
fn files(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// One mutation of `input`.
fn mutate(rng: &mut fastrand::Rng, input: &[u8], corpus: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.usize(1..=8) {
        let len = out.len();
        match rng.u8(0..8) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                out[i] ^= 1 << rng.u8(0..8);
            }
            1 if len > 0 => {
                let i = rng.usize(..len);
                out[i] = rng.u8(..);
            }
            2 => {
                let i = rng.usize(..=len);
                let n = rng.usize(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let a = rng.usize(..len);
                let b = rng.usize(a..=len.min(a + 64));
                out.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.usize(..len);
                let b = rng.usize(a..=len.min(a + 256));
                let piece = out[a..b].to_vec();
                let at = rng.usize(..=out.len());
                for _ in 0..rng.usize(1..=4) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.usize(..corpus.len())];
                let cut = rng.usize(..=len);
                let from = rng.usize(..=other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            6 if !tokens.is_empty() => {
                let t = tokens[rng.usize(..tokens.len())];
                let at = rng.usize(..=len);
                out.splice(at..at, t.iter().copied());
            }
            7 if len > 0 => out.truncate(rng.usize(..len)),
            _ => {}
        }
    }
    out
}

/// Replays `target`'s regressions, then fuzzes it for the budget.
fn run(
    name: &str,
    test_inputs: u64,
    seeds: Vec<Vec<u8>>,
    tokens: &[&[u8]],
    target: impl Fn(&[u8]),
) {
    let regressions = files(&repo().join("fuzz/regressions").join(name));
    for (i, input) in regressions.iter().enumerate() {
        if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            panic!("{name}: regression input {i} fails again");
        }
    }
    let mut corpus = seeds;
    corpus.extend(regressions);
    corpus.push(Vec::new());
    let budget = budget(test_inputs);
    let seed = seed(&budget);
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut runs = 0u64;
    while match budget {
        Budget::Time(limit) => started.elapsed() < limit,
        Budget::Inputs(n) => runs < n,
    } {
        let base = &corpus[rng.usize(..corpus.len())];
        let input = mutate(&mut rng, base, &corpus, tokens);
        runs += 1;
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let dir = repo().join("fuzz/crashes").join(name);
            let _ = std::fs::create_dir_all(&dir);
            let digest: String = {
                use md5::Digest as _;
                md5::Md5::digest(&input)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            };
            let path = dir.join(digest);
            let _ = std::fs::write(&path, &input);
            panic!(
                "{name}: input {} panics (seed {seed}, after {runs} inputs)",
                path.display()
            );
        }
        // Without coverage, let the corpus drift a little towards deeper inputs.
        if runs.is_multiple_of(64) && corpus.len() < 4_096 {
            corpus.push(input);
        }
    }
    eprintln!(
        "fuzz {name}: {runs} inputs in {:.1} s (seed {seed}), no failure",
        started.elapsed().as_secs_f64()
    );
}

/// Lines of the repository's sample inputs.
fn sample_lines(file: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read(repo().join("tests/data").join(file)).unwrap_or_default();
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .take(64)
        .map(<[u8]>::to_vec)
        .collect()
}

fn records(input: &[u8]) -> Vec<crate::Record> {
    let data = Bytes::copy_from_slice(input);
    let mut out = Vec::new();
    let mut at = 0;
    for piece in input.split(|b| *b == b'\n') {
        out.push(crate::Record::new(data.slice(at..at + piece.len()), 0));
        at += piece.len() + 1;
    }
    out
}

fn decode_target(format: crate::RecordFormat) -> impl Fn(&[u8]) {
    use arrow::datatypes::{DataType, TimeUnit};
    move |input: &[u8]| {
        let mut decoder = crate::RecordDecoder::builder(format.clone())
            .with_columns(vec![
                crate::Column::new("ticker_symbol", DataType::Utf8),
                crate::Column::new("price", DataType::Float64),
                crate::Column::new("n", DataType::Int64),
                crate::Column::new("ok", DataType::Boolean),
                crate::Column::new(
                    "event_time",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                ),
                crate::Column::new("nested.inner", DataType::Utf8),
            ])
            .with_max_record_bytes(4096)
            .build()
            .expect("a decoder");
        let records = records(input);
        let out = decoder
            .decode(&records)
            .expect("decoding never fails whole");
        assert_eq!(
            out.batch.num_rows() + out.failures.len(),
            records.len(),
            "every record is a row or a failure"
        );
    }
}

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"1e308",
    b"-0",
    b"\\u0000",
    b"\\ud800",
    b"\"price\":",
    b"\"event_time\":",
    b"\"nested\":{\"inner\":",
    b"2026-01-01T00:00:00Z",
    b"9223372036854775808",
    b"\xff",
    b"\n",
];

#[test]
fn json_decoding() {
    let mut seeds = sample_lines("ticker_sample.ndjson");
    seeds.push(
        br#"{"nested":{"inner":"x"},"n":1,"ok":true,"event_time":"2026-01-01T00:00:00.5Z"}"#
            .to_vec(),
    );
    run(
        "json_decoding",
        TEST_INPUTS,
        seeds,
        JSON_TOKENS,
        decode_target(crate::RecordFormat::Json),
    );
}

#[test]
fn csv_decoding() {
    let seeds = sample_lines("ticks.csv");
    run(
        "csv_decoding",
        TEST_INPUTS_SLOW,
        seeds,
        &[
            b",",
            b"\"",
            b"\"\"",
            b"\n",
            b"\r",
            b"1.5",
            b"2026-01-01T00:00:00Z",
            b"true",
        ],
        decode_target(crate::RecordFormat::Csv(
            crate::format::CsvOptions::default(),
        )),
    );
}

#[test]
fn csv_framing() {
    use crate::source::Framing;
    let mut seeds = vec![std::fs::read(repo().join("tests/data/ticks.csv")).unwrap_or_default()];
    seeds.push(b"a,b\n1,\"x\ny\"\n2,\"q\\\"\nr\"\n3,z".to_vec());
    // Framing never reads the file; building the source opens it.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("framed.csv");
    std::fs::write(&path, b"").expect("an empty file");
    run(
        "csv_framing",
        TEST_INPUTS,
        seeds,
        &[b"\"", b"\\", b"\n", b"\r\n", b"\\\"", b"\"\""],
        |input: &[u8]| {
            let max = 64;
            let mut s = crate::FileSource::builder(&path)
                .with_framing(Framing::CsvRows {
                    quote: b'"',
                    escape: Some(b'\\'),
                })
                .build()
                .expect("a source");
            crate::Source::set_max_batch_records(&mut s, 7);
            crate::Source::set_max_record_bytes(&mut s, max);
            // Fed in pieces of a size taken from the input, as reads would come.
            let step = 1 + input.first().map_or(0, |b| *b as usize % 32);
            let mut framed = Vec::new();
            for piece in input.chunks(step) {
                s.feed(piece);
                framed.extend(s.frame(false));
            }
            for _ in 0..input.len() + 2 {
                framed.extend(s.frame(true));
            }
            assert!(framed.iter().all(|r| r.payload().len() <= max));
            assert_eq!(
                s.consumed(),
                input.len() as u64,
                "every byte framed or dropped: {framed:?}"
            );
        },
    );
}

#[cfg(feature = "aws")]
#[test]
fn kpl_deaggregation() {
    let mut seeds = Vec::new();
    for n in [1usize, 3, 40] {
        let payloads: Vec<String> = (0..n).map(|i| format!("{{\"i\":{i}}}")).collect();
        let keys: Vec<String> = (0..n).map(|i| format!("k{}", i % 3)).collect();
        let agg = crate::kinesis::kpl::aggregate(
            payloads
                .iter()
                .zip(&keys)
                .map(|(p, k)| (k.as_str(), (n == 3).then_some("42"), p.as_bytes())),
        );
        seeds.push(agg.to_vec());
    }
    run(
        "kpl_deaggregation",
        TEST_INPUTS,
        seeds,
        &[
            b"\xf3\x89\x9a\xc2",
            b"\x0a\x01k",
            b"\x1a\x04\x08\x00\x1a\x00",
            b"\x12\x02",
            b"\xff\xff\xff\xff\x0f",
        ],
        |input: &[u8]| {
            let data = Bytes::copy_from_slice(input);
            if let Ok(Some(agg)) = crate::kinesis::kpl::deaggregate(&data) {
                for r in &agg.records {
                    assert!(r.partition_key_index < agg.partition_keys.len());
                    let _ = agg.partition_key(r);
                    let _ = agg.explicit_hash_key(r);
                }
            }
            let mut unpacker = crate::kinesis::RecordUnpacker::new(std::sync::Arc::from("shard"))
                .with_hash_range(0, u128::MAX / 2);
            let mut out = Vec::new();
            let stats = unpacker.unpack(&data, "pk", "1", 0, &mut out);
            assert_eq!(stats.records as usize, out.len());
        },
    );
}

#[cfg(feature = "aws")]
#[test]
fn envelope_parsing() {
    let seeds = vec![crate::crypto::fuzz_seed_envelope()];
    run(
        "envelope_parsing",
        TEST_INPUTS,
        seeds,
        &[b"RVE1", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"],
        |input: &[u8]| {
            let _ = crate::crypto::envelope::declared_len(input);
            if let Ok(p) = crate::crypto::envelope::parse(input) {
                assert!(p.len <= input.len());
            }
        },
    );
}

#[test]
fn kda_translation() {
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(repo().join("tests/sql"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(sql) = std::fs::read(entry.path().join("query.sql")) {
            if crate::kda::Dialect::of(&String::from_utf8_lossy(&sql)) == crate::kda::Dialect::Kda {
                seeds.push(sql);
            }
        }
    }
    run(
        "kda_translation",
        TEST_INPUTS,
        seeds,
        &[
            b"CREATE OR REPLACE STREAM ",
            b"CREATE OR REPLACE PUMP ",
            b" AS INSERT INTO ",
            b"SELECT STREAM ",
            b"\"",
            b"'",
            b"(",
            b")",
            b";",
            b"--",
            b"/*",
            b"*/",
            b"WINDOW W AS (",
            b"RANGE INTERVAL '1' MINUTE PRECEDING",
            b"STEP(",
            b"ROWTIME",
            b"TABLE(",
            b"CURSOR(",
            b"RANDOM_CUT_FOREST(",
            b"FLOOR(",
            b" TO MINUTE)",
        ],
        |input: &[u8]| {
            let text = String::from_utf8_lossy(input);
            let _ = crate::kda::translate(&text);
        },
    );
}

#[test]
fn pipeline_files() {
    let mut seeds = files(&repo().join("examples"))
        .into_iter()
        .filter(|f| f.starts_with(b"#") || f.starts_with(b"["))
        .collect::<Vec<_>>();
    seeds.extend(
        files(&repo().join("tests/data"))
            .into_iter()
            .filter(|f| f.contains(&b'='))
            .take(8),
    );
    run(
        "pipeline_files",
        TEST_INPUTS,
        seeds,
        &[
            b"[[sinks]]\n",
            b"[source]\n",
            b"type = \"s3\"\n",
            b"[[udfs]]\n",
            b"\"\"\"",
            b"= ",
            b"\n",
            b"[query]\nsql = \"",
        ],
        |input: &[u8]| {
            let text = String::from_utf8_lossy(input);
            let _ = crate::config::PipelineConfig::from_toml_str(&text, ".");
        },
    );
}

#[test]
fn checkpoint_decoding() {
    let store = crate::FileCheckpointStore::new("fuzzed.checkpoint");
    let seeds = vec![crate::checkpoint::fuzz_seed_checkpoint()];
    run(
        "checkpoint_decoding",
        TEST_INPUTS,
        seeds,
        &[
            b"{",
            b"}",
            b"\"state_lengths\":[",
            b"18446744073709551615",
            b"\"position\":{",
        ],
        |input: &[u8]| {
            let _ = store.decode(input);
        },
    );
}
