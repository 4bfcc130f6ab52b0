#!/usr/bin/env python3
"""Runs each benchmark query on rivulet and on its peers over one generated input, checks that
their outputs agree, and writes the timings.

usage: harness.py --rivulet PATH [--records N] [--runs R] [--engines rivulet,datafusion,duckdb,flink]
                  [--queries tumbling,hopping,filter] [--out DIR] [--tiny]

Every engine runs on one core (the caller pins the process with taskset). A time is accepted only
when the engine's output equals the first engine's, row for row after sorting (floating-point
numbers to a relative 1e-9, times as epoch milliseconds); a disagreement is an error that names the
query, the engines and the first differing rows. Results: DIR/results.json and DIR/results.md.
"""
import argparse
import datetime
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

SECTORS = ["TECHNOLOGY", "HEALTHCARE", "ENERGY", "FINANCIAL", "RETAIL", "AUTOMOBILE"]
EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def generate(path, records, keys=100, rate=10_000.0, seed=7):
    """The ticker stream as NDJSON: event time from 2026-01-01T00:00:00Z, 1/rate s per record."""
    rnd = random.Random(seed)
    with open(path, "w") as f:
        for i in range(records):
            k = rnd.randrange(keys)
            ms = int(i * 1000 / rate)
            ts = EPOCH + datetime.timedelta(milliseconds=ms)
            f.write(json.dumps({
                "ticker_symbol": "T%03d" % k,
                "sector": SECTORS[k % len(SECTORS)],
                "change": round(rnd.uniform(-5, 5), 2),
                "price": round(rnd.uniform(1, 500), 2),
                "event_time": ts.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ts.microsecond // 1000),
            }, separators=(",", ":")) + "\n")


# Each query: its output columns (name, kind: s string, i integer, f float, t time) and its text
# per engine. Batch engines compute what the streaming engines emit for a finite, ordered input.
QUERIES = {
    "tumbling": {
        "about": "per ticker_symbol and 10 s tumbling window: COUNT, AVG, MIN, MAX of price",
        "columns": [("ticker_symbol", "s"), ("window_start", "t"), ("n", "i"),
                    ("avg_price", "f"), ("min_price", "f"), ("max_price", "f")],
        "rivulet": """SELECT ticker_symbol, window_start, COUNT(*) AS n, AVG(price) AS avg_price,
            MIN(price) AS min_price, MAX(price) AS max_price FROM source
            GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND)""",
        "datafusion": """SELECT ticker_symbol, date_bin(INTERVAL '10 seconds', CAST(event_time AS TIMESTAMP)) AS window_start,
            COUNT(*) AS n, AVG(price) AS avg_price, MIN(price) AS min_price, MAX(price) AS max_price
            FROM src GROUP BY 1, 2""",
        "duckdb": """SELECT ticker_symbol, time_bucket(INTERVAL 10 SECOND, event_time) AS window_start,
            COUNT(*) AS n, AVG(price) AS avg_price, MIN(price) AS min_price, MAX(price) AS max_price
            FROM src GROUP BY ALL""",
        "flink": """SELECT ticker_symbol, window_start, COUNT(*), AVG(price), MIN(price), MAX(price)
            FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(event_time), INTERVAL '10' SECOND))
            GROUP BY ticker_symbol, window_start, window_end""",
        "flink_sink": "ticker_symbol STRING, window_start TIMESTAMP(3), n BIGINT, avg_price DOUBLE, min_price DOUBLE, max_price DOUBLE",
    },
    "hopping": {
        "about": "per ticker_symbol, 10 s windows every 5 s: COUNT and MAX of price",
        "columns": [("ticker_symbol", "s"), ("window_start", "t"), ("n", "i"), ("max_price", "f")],
        "rivulet": """SELECT ticker_symbol, window_start, COUNT(*) AS n, MAX(price) AS max_price FROM source
            GROUP BY ticker_symbol, HOP(event_time, INTERVAL '5' SECOND, INTERVAL '10' SECOND)""",
        # A record is in the window starting at its 5 s bucket and in the one 5 s before.
        "datafusion": """WITH b AS (SELECT ticker_symbol, price,
                date_bin(INTERVAL '5 seconds', CAST(event_time AS TIMESTAMP)) AS s FROM src),
            w AS (SELECT ticker_symbol, price, s AS window_start FROM b
                  UNION ALL SELECT ticker_symbol, price, s - INTERVAL '5 seconds' FROM b)
            SELECT ticker_symbol, window_start, COUNT(*) AS n, MAX(price) AS max_price FROM w GROUP BY 1, 2""",
        "duckdb": """WITH b AS (SELECT ticker_symbol, price, time_bucket(INTERVAL 5 SECOND, event_time) AS s FROM src),
            w AS (SELECT ticker_symbol, price, s AS window_start FROM b
                  UNION ALL SELECT ticker_symbol, price, s - INTERVAL 5 SECOND FROM b)
            SELECT ticker_symbol, window_start, COUNT(*) AS n, MAX(price) AS max_price FROM w GROUP BY ALL""",
        "flink": """SELECT ticker_symbol, window_start, COUNT(*), MAX(price)
            FROM TABLE(HOP(TABLE src, DESCRIPTOR(event_time), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
            GROUP BY ticker_symbol, window_start, window_end""",
        "flink_sink": "ticker_symbol STRING, window_start TIMESTAMP(3), n BIGINT, max_price DOUBLE",
    },
    "filter": {
        "about": "filter and projection: technology stocks that moved more than 2",
        "columns": [("ticker_symbol", "s"), ("price", "f"), ("change", "f"), ("pct", "f")],
        "rivulet": """SELECT ticker_symbol, price, change, change / price * 100 AS pct FROM source
            WHERE sector = 'TECHNOLOGY' AND change > 2""",
        "datafusion": """SELECT ticker_symbol, price, change, change / price * 100 AS pct FROM src
            WHERE sector = 'TECHNOLOGY' AND change > 2""",
        "duckdb": """SELECT ticker_symbol, price, change, change / price * 100 AS pct FROM src
            WHERE sector = 'TECHNOLOGY' AND change > 2""",
        "flink": """SELECT ticker_symbol, price, change, change / price * 100 FROM src
            WHERE sector = 'TECHNOLOGY' AND change > 2""",
        "flink_sink": "ticker_symbol STRING, price DOUBLE, change DOUBLE, pct DOUBLE",
    },
}


def to_millis(v):
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return int(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return int(round(v.timestamp() * 1000))
    s = str(v).strip().replace(" ", "T")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    d = datetime.datetime.fromisoformat(s)
    return to_millis(d)


def canonical(rows, columns):
    """Rows as sorted tuples of comparable values."""
    out = []
    for r in rows:
        t = []
        for v, (_, kind) in zip(r, columns):
            if v is None:
                t.append(None)
            elif kind == "f":
                t.append(float(v))
            elif kind == "i":
                t.append(int(v))
            elif kind == "t":
                t.append(to_millis(v))
            else:
                t.append(str(v))
        out.append(tuple(t))
    return sorted(out, key=lambda t: tuple((x is None, x) for x in t))


def same_rows(a, b):
    """Whether two canonical row lists hold the same rows: floats equal to a relative 1e-9 (engines
    sum in different orders, so an average can differ in its last digits), the rest exactly."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
                    return False
            elif x != y:
                return False
    return True


def run_rivulet(binary, sql, data, columns, work):
    qfile = os.path.join(work, "query.sql")
    with open(qfile, "w") as f:
        f.write(sql)
    outdir = os.path.join(work, "rivulet-out")
    shutil.rmtree(outdir, ignore_errors=True)
    start = time.perf_counter()
    p = subprocess.run([binary, "replay", "--sql", qfile, "--input", data, "--rowtime", "event_time",
                        "--lateness-ms", "1000", "--output-dir", outdir],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    secs = time.perf_counter() - start
    if p.returncode != 0:
        raise RuntimeError("rivulet failed: " + p.stderr[-2000:])
    errors = os.path.join(outdir, "error_stream.ndjson")
    if os.path.exists(errors) and os.path.getsize(errors) > 0:
        with open(errors) as f:
            raise RuntimeError("rivulet sent rows to the error output: " + f.readline()[:500])
    rows = []
    with open(os.path.join(outdir, "DESTINATION_SQL_STREAM.ndjson")) as f:
        for line in f:
            o = json.loads(line)
            rows.append([o.get(c) for c, _ in columns])
    return secs, rows


def run_datafusion(sql, data, work):
    from datafusion import SessionConfig, SessionContext
    link = os.path.join(work, "input.json")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(data), link)
    ctx = SessionContext(SessionConfig().with_target_partitions(1))
    ctx.register_json("src", link)
    start = time.perf_counter()
    batches = ctx.sql(sql).collect()
    secs = time.perf_counter() - start
    rows = []
    for b in batches:
        cols = [c.to_pylist() for c in b.columns]
        rows.extend(zip(*cols))
    return secs, rows


def run_duckdb(sql, data, work):
    import duckdb
    con = duckdb.connect()
    con.execute("SET threads=1")
    source = (f"read_json('{data}', format='newline_delimited', columns={{ticker_symbol:'VARCHAR', "
              "sector:'VARCHAR', change:'DOUBLE', price:'DOUBLE', event_time:'TIMESTAMPTZ'})")
    con.execute("SET TimeZone='UTC'")
    start = time.perf_counter()
    rows = con.execute(sql.replace("FROM src", f"FROM {source}")).fetchall()
    secs = time.perf_counter() - start
    return secs, rows


def run_flink(query, data, columns, work):
    from pyflink.table import EnvironmentSettings, TableEnvironment
    t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t.get_config().set("parallelism.default", "1")
    t.get_config().set("table.local-time-zone", "UTC")
    outdir = tempfile.mkdtemp(dir=work)
    t.execute_sql(f"""CREATE TABLE src (ticker_symbol STRING, sector STRING, change DOUBLE, price DOUBLE,
      event_time TIMESTAMP_LTZ(3), WATERMARK FOR event_time AS event_time - INTERVAL '1' SECOND)
      WITH ('connector'='filesystem','path'='file://{os.path.abspath(data)}','format'='json',
            'json.timestamp-format.standard'='ISO-8601')""")
    t.execute_sql(f"""CREATE TABLE snk ({query['flink_sink']})
      WITH ('connector'='filesystem','path'='file://{outdir}','format'='json',
            'json.timestamp-format.standard'='ISO-8601')""")
    t.execute_sql("SELECT 1").wait()
    start = time.perf_counter()
    t.execute_sql("INSERT INTO snk " + query["flink"]).wait()
    secs = time.perf_counter() - start
    rows = []
    for dirpath, _, files in os.walk(outdir):
        for fn in files:
            if fn.startswith("."):
                continue
            with open(os.path.join(dirpath, fn)) as f:
                for line in f:
                    if line.strip():
                        o = json.loads(line)
                        rows.append([o.get(c) for c, _ in columns])
    return secs, rows


def measure(engine, query, data, work, runs, rivulet):
    best, rows = None, None
    for _ in range(runs):
        if engine == "rivulet":
            secs, rows = run_rivulet(rivulet, query["rivulet"], data, query["columns"], work)
        elif engine == "datafusion":
            secs, rows = run_datafusion(query["datafusion"], data, work)
        elif engine == "duckdb":
            secs, rows = run_duckdb(query["duckdb"], data, work)
        elif engine == "flink":
            secs, rows = run_flink(query, data, query["columns"], work)
        else:
            raise ValueError(engine)
        best = secs if best is None else min(best, secs)
    return best, canonical(rows, query["columns"])


def disagreement(name, a, ra, b, rb):
    sa, sb = set(ra), set(rb)
    only_a = sorted(sa - sb)[:3]
    only_b = sorted(sb - sa)[:3]
    return (f"{name}: {a} and {b} disagree ({len(ra)} vs {len(rb)} rows); "
            f"only {a}: {only_a}; only {b}: {only_b}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rivulet", required=True)
    p.add_argument("--records", type=int, default=2_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--engines", default="rivulet,datafusion,duckdb,flink")
    p.add_argument("--queries", default=",".join(QUERIES))
    p.add_argument("--out", default="bench/results")
    p.add_argument("--input", help="use this ticker NDJSON instead of generating one")
    p.add_argument("--report", help="also write the report (benchmarks.md and its charts) here")
    p.add_argument("--scenarios", default="ticker,car,clickstream",
                   help="`rivulet bench` scenarios whose latency percentiles the report charts")
    a = p.parse_args()
    engines = [e for e in a.engines.split(",") if e]
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="rivulet-peers-")
    data = a.input or os.path.join(work, "ticker.ndjson")
    if not a.input:
        generate(data, a.records)
    records = sum(1 for _ in open(data))
    results, failures = [], []
    for name in [q for q in a.queries.split(",") if q]:
        query = QUERIES[name]
        reference = None
        for engine in engines:
            secs, rows = measure(engine, query, data, work, a.runs, a.rivulet)
            if reference is None:
                reference = (engine, rows)
            elif not same_rows(rows, reference[1]):
                failures.append(disagreement(name, reference[0], reference[1], engine, rows))
                continue
            results.append({"query": name, "engine": engine, "records": records, "secs": secs,
                            "rows_per_s": records / secs, "out_rows": len(rows)})
            print(f"{name:10} {engine:11} {secs:8.3f} s {records / secs:14,.0f} rows/s {len(rows):8} rows",
                  flush=True)
    shutil.rmtree(work, ignore_errors=True)
    latency = []
    for scenario in [s for s in a.scenarios.split(",") if s]:
        p = subprocess.run([a.rivulet, "bench", "--scenario", scenario, "--records",
                            str(min(records, 1_000_000)), "--json"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            failures.append(f"rivulet bench --scenario {scenario}: {p.stderr[-500:]}")
            continue
        latency.append(json.loads(p.stdout))
    summary = {"records": records, "runs": a.runs, "cores": 1, "machine": machine(),
               "results": results, "latency": latency, "failures": failures}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(table(summary))
    if a.report:
        report(summary, a.report)
    for line in failures:
        print("FAILED " + line, file=sys.stderr)
    sys.exit(1 if failures else 0)


def table(summary):
    """A Markdown table: rows/s per engine per query, and rivulet's ratio to each peer."""
    by = {}
    for r in summary["results"]:
        by.setdefault(r["query"], {})[r["engine"]] = r["rows_per_s"]
    engines = sorted({r["engine"] for r in summary["results"]}, key=lambda e: (e != "rivulet", e))
    lines = [f"{summary['records']:,} ticker records, one core, best of {summary['runs']} runs\n",
             "| query | " + " | ".join(engines) + " |",
             "| --- |" + " --- |" * len(engines)]
    for q, got in by.items():
        cells = []
        for e in engines:
            v = got.get(e)
            if v is None:
                cells.append("—")
            elif e == "rivulet" or "rivulet" not in got:
                cells.append(f"{v / 1e6:.2f} M")
            else:
                cells.append(f"{v / 1e6:.2f} M (rivulet {got['rivulet'] / v:.2f}×)")
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine():
    """The CPU model and core count, for the report."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {os.uname().sysname} {os.uname().machine}"


def report(summary, directory):
    """benchmarks.md with the table and two charts (SVG): rows/s per engine per query, and the
    latency percentiles of each `rivulet bench` scenario."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = os.path.join(directory, "benchmarks")
    os.makedirs(charts, exist_ok=True)
    queries = list(dict.fromkeys(r["query"] for r in summary["results"]))
    engines = sorted({r["engine"] for r in summary["results"]}, key=lambda e: (e != "rivulet", e))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(engines), 1)
    for i, e in enumerate(engines):
        values = [next((r["rows_per_s"] / 1e6 for r in summary["results"]
                        if r["query"] == q and r["engine"] == e), 0) for q in queries]
        ax.bar([x + i * width for x in range(len(queries))], values, width, label=e)
    ax.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(queries))], queries)
    ax.set_ylabel("million rows/s (one core)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"{summary['records']:,} ticker records, best of {summary['runs']}")
    fig.tight_layout()
    fig.savefig(os.path.join(charts, "throughput.svg"))
    plt.close(fig)

    if summary["latency"]:
        fig, ax = plt.subplots(figsize=(8, 4))
        marks = ["p50", "p99", "p99_9", "max"]
        width = 0.8 / len(marks)
        for i, m in enumerate(marks):
            ax.bar([x + i * width for x in range(len(summary["latency"]))],
                   [s["latency_ms"][m] for s in summary["latency"]], width, label=m.replace("_", "."))
        ax.set_xticks([x + width * 1.5 for x in range(len(summary["latency"]))],
                      [s["scenario"] for s in summary["latency"]])
        ax.set_ylabel("production to commit (ms)")
        ax.legend()
        ax.set_title("rivulet bench: latency of the default 10 s window query, as fast as possible")
        fig.tight_layout()
        fig.savefig(os.path.join(charts, "latency.svg"))
        plt.close(fig)

    lines = ["# Benchmarks", "",
             "Generated by `bench/peers/run.sh --report docs` (the harness in `bench/peers/`); edit the",
             "harness, not this file.", "",
             f"Machine: {summary['machine']}. Every engine runs on one core (`taskset -c 0`), one after",
             "another, on the same generated input; a time is accepted only when that engine's output",
             "equals the first engine's (rows sorted, floating-point numbers to a relative 1e-9).", "",
             "## Throughput", "", table(summary), "![rows/s per engine per query](benchmarks/throughput.svg)", ""]
    for q in queries:
        lines.append(f"- **{q}**: {QUERIES[q]['about']}.")
    lines += ["", "rivulet's figure is the whole `rivulet replay` process (start, read, decode, SQL, write",
              "JSON lines); DataFusion's and DuckDB's are the query's `collect` in Python (batch, one",
              "partition or thread); Flink's the job's wall time after a warm-up query (JVM start excluded).", ""]
    if summary["latency"]:
        lines += ["## Latency and cost (`rivulet bench`)", "",
                  "| scenario | records/s | p50 ms | p99 ms | p99.9 ms | CPU s / M records | peak RSS MiB |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for s in summary["latency"]:
            l = s["latency_ms"]
            lines.append(f"| {s['scenario']} | {s['records_per_s'] / 1e6:.2f} M | {l['p50']:.1f} | "
                         f"{l['p99']:.1f} | {l['p99_9']:.1f} | {s['cpu_s_per_million']:.2f} | "
                         f"{s['peak_rss_mib']:.0f} |")
        lines += ["", "![latency percentiles per scenario](benchmarks/latency.svg)", "",
                  "Latency is from a record's production to the commit that covers it: as fast as possible, a",
                  "record waits for its 10-second window to close and its row to be stored, so these are the",
                  "latencies of a backlog, not of a live stream at a set rate.", ""]
    if summary["failures"]:
        lines += ["## Failures (disagreeing outputs, runs that failed)", ""] + [f"- {f}" for f in summary["failures"]] + [""]
    with open(os.path.join(directory, "benchmarks.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
