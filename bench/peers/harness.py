#!/usr/bin/env python3
"""Runs each benchmark query on rivulet and on its peers over one generated input, checks that
their outputs agree, and writes the timings.

usage: harness.py --rivulet PATH [--records N] [--runs R] [--engines rivulet,datafusion,duckdb,flink]
                  [--queries tumbling,hopping,…] [--out DIR] [--udfs DIR]

Three generated inputs: the ticker stream, the original solution's car telemetry and a Nexmark bid
stream. A query with a WASM function runs on rivulet with the module (`--udfs`, default
udfs/build) and on the peers with the same function written in SQL.

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
import struct
import subprocess
import sys
import tempfile
import time

SECTORS = ["TECHNOLOGY", "HEALTHCARE", "ENERGY", "FINANCIAL", "RETAIL", "AUTOMOBILE"]
EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def iso(ms):
    ts = EPOCH + datetime.timedelta(milliseconds=ms)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ts.microsecond // 1000)


def generate(path, records, keys=100, rate=10_000.0, seed=7):
    """The ticker stream as NDJSON: event time from 2026-01-01T00:00:00Z, 1/rate s per record."""
    rnd = random.Random(seed)
    with open(path, "w") as f:
        for i in range(records):
            k = rnd.randrange(keys)
            f.write(json.dumps({
                "ticker_symbol": "T%03d" % k,
                "sector": SECTORS[k % len(SECTORS)],
                "change": round(rnd.uniform(-5, 5), 2),
                "price": round(rnd.uniform(1, 500), 2),
                "event_time": iso(int(i * 1000 / rate)),
            }, separators=(",", ":")) + "\n")


def generate_cars(path, records, cars=500, rate=10_000.0, seed=11):
    """The original solution's car telemetry (car, carid, engine_temp, speed, long, lat) with
    event time `ts`, 1/rate s per record."""
    rnd = random.Random(seed)
    with open(path, "w") as f:
        for i in range(records):
            k = rnd.randrange(cars)
            f.write(json.dumps({
                "car": "car%04d" % k, "carid": k,
                "engine_temp": rnd.randrange(60, 120),
                "speed": rnd.randrange(0, 160),
                "long": round(rnd.uniform(-10.0, 30.0), 5),
                "lat": round(rnd.uniform(35.0, 60.0), 5),
                "ts": iso(int(i * 1000 / rate)),
            }, separators=(",", ":")) + "\n")


def generate_bids(path, records, rate=1_000.0, seed=13):
    """A Nexmark bid stream (auction, bidder, price, channel, url, date_time, extra), 1/rate s per
    bid. As in Nexmark's generator, auctions open over time and most bids go to a few recent, hot
    ones; bidders and prices are skewed too."""
    rnd = random.Random(seed)
    channels = ["Google", "Facebook", "Baidu", "Apple"]
    with open(path, "w") as f:
        for i in range(records):
            newest = 1000 + i // 50
            if rnd.random() < 0.5:
                auction = newest - rnd.randrange(min(10, newest - 999))
            else:
                auction = 1000 + rnd.randrange(newest - 999)
            bidder = 1000 + (rnd.randrange(100) if rnd.random() < 0.25 else rnd.randrange(i // 10 + 100))
            channel = rnd.choice(channels)
            f.write(json.dumps({
                "auction": auction, "bidder": bidder,
                "price": int(rnd.lognormvariate(7, 1.2)) + 1,
                "channel": channel,
                "url": "https://www.nexmark.com/%s/item.htm?query=1&channel_id=%d" % (channel.lower(), i % 1000),
                "date_time": iso(int(i * 1000 / rate)),
                "extra": "",
            }, separators=(",", ":")) + "\n")


# Each input: its generator, the field rivulet takes as ROWTIME, its columns for DuckDB and Flink.
INPUTS = {
    "ticker": {
        "generate": generate, "rowtime": "event_time",
        "duckdb": "ticker_symbol:'VARCHAR', sector:'VARCHAR', change:'DOUBLE', price:'DOUBLE', event_time:'TIMESTAMPTZ'",
        "flink": "ticker_symbol STRING, sector STRING, change DOUBLE, price DOUBLE, event_time TIMESTAMP_LTZ(3)",
    },
    "car": {
        "generate": generate_cars, "rowtime": "ts",
        "duckdb": "car:'VARCHAR', carid:'BIGINT', engine_temp:'INTEGER', speed:'INTEGER', long:'DOUBLE', lat:'DOUBLE', ts:'TIMESTAMPTZ'",
        "flink": "car STRING, carid BIGINT, engine_temp INT, speed INT, `long` DOUBLE, lat DOUBLE, ts TIMESTAMP_LTZ(3)",
    },
    "bids": {
        "generate": generate_bids, "rowtime": "date_time",
        "duckdb": "auction:'BIGINT', bidder:'BIGINT', price:'BIGINT', channel:'VARCHAR', url:'VARCHAR', date_time:'TIMESTAMPTZ', extra:'VARCHAR'",
        "flink": "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP_LTZ(3), extra STRING",
    },
}

# The haversine distance in SQL, to Berlin, for the peers and rivulet's native run (the module
# udfs/examples/haversine computes the same in WASM).
HAVERSINE = ("2 * 6371.0088 * ASIN(SQRT(POWER(SIN(RADIANS(lat - 52.52) / 2), 2) + COS(RADIANS(lat)) * "
             "COS(RADIANS(52.52)) * POWER(SIN(RADIANS({long} - 13.405) / 2), 2)))")


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
    "session": {
        "about": "per ticker_symbol, sessions closed by a 50 ms gap: bounds, COUNT and MAX of price",
        "columns": [("ticker_symbol", "s"), ("window_start", "t"), ("window_end", "t"), ("n", "i"),
                    ("max_price", "f")],
        "rivulet": """SELECT ticker_symbol, window_start, window_end, COUNT(*) AS n, MAX(price) AS max_price
            FROM source GROUP BY ticker_symbol, SESSION(event_time, INTERVAL '0.05' SECOND)""",
        # A session ends 50 ms after its last row; a row at or after that end opens a new one.
        # Flink merges a row exactly one gap later into the session: with times in whole
        # milliseconds, its gap of 49 ms with 1 ms added to the end is the same session.
        "datafusion": """WITH t AS (SELECT ticker_symbol, price, CAST(event_time AS TIMESTAMP) AS ts FROM src),
            o AS (SELECT ticker_symbol, price, ts, CASE WHEN LAG(ts) OVER (PARTITION BY ticker_symbol ORDER BY ts)
                  > ts - INTERVAL '50 milliseconds' THEN 0 ELSE 1 END AS opens FROM t),
            s AS (SELECT ticker_symbol, price, ts, SUM(opens) OVER (PARTITION BY ticker_symbol ORDER BY ts
                  ROWS UNBOUNDED PRECEDING) AS sid FROM o)
            SELECT ticker_symbol, MIN(ts), MAX(ts) + INTERVAL '50 milliseconds', COUNT(*), MAX(price)
            FROM s GROUP BY ticker_symbol, sid""",
        "duckdb": """WITH o AS (SELECT ticker_symbol, price, event_time AS ts, CASE WHEN LAG(event_time) OVER
                  (PARTITION BY ticker_symbol ORDER BY event_time) > event_time - INTERVAL 50 MILLISECOND
                  THEN 0 ELSE 1 END AS opens FROM src),
            s AS (SELECT *, SUM(opens) OVER (PARTITION BY ticker_symbol ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM o)
            SELECT ticker_symbol, MIN(ts), MAX(ts) + INTERVAL 50 MILLISECOND, COUNT(*), MAX(price)
            FROM s GROUP BY ticker_symbol, sid""",
        "flink": """SELECT ticker_symbol, window_start, window_end + INTERVAL '0.001' SECOND, COUNT(*), MAX(price)
            FROM TABLE(SESSION(TABLE src PARTITION BY ticker_symbol, DESCRIPTOR(event_time), INTERVAL '0.049' SECOND))
            GROUP BY ticker_symbol, window_start, window_end""",
        "flink_sink": "ticker_symbol STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, max_price DOUBLE",
    },
    "kda_app": {
        "input": "car",
        "about": "the original solution's KDA application, unchanged: per car, 30 s tumbling windows "
                 "on ROWTIME, COUNT and AVG/MIN/MAX of engine_temp as REAL",
        "columns": [("CAR", "s"), ("VEHICLE_COUNT", "i"), ("AVG_TEMP", "r"), ("LOW_TEMP", "r"),
                    ("HIGH_TEMP", "r")],
        "rivulet": """CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (car VARCHAR(8), vehicle_count INTEGER,
  avg_temp REAL, low_temp REAL, high_temp REAL);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
SELECT STREAM "car", COUNT(*), AVG("engine_temp"), MIN("engine_temp"), MAX("engine_temp")
FROM "SOURCE_SQL_STREAM_001"
GROUP BY "car", FLOOR(("SOURCE_SQL_STREAM_001".ROWTIME - TIMESTAMP '1970-01-01 00:00:00') SECOND / 30 TO SECOND);""",
        "datafusion": """SELECT car, COUNT(*), CAST(AVG(engine_temp) AS REAL), CAST(MIN(engine_temp) AS REAL),
            CAST(MAX(engine_temp) AS REAL) FROM src
            GROUP BY car, date_bin(INTERVAL '30 seconds', CAST(ts AS TIMESTAMP))""",
        "duckdb": """SELECT car, COUNT(*), CAST(AVG(engine_temp) AS REAL), CAST(MIN(engine_temp) AS REAL),
            CAST(MAX(engine_temp) AS REAL) FROM src GROUP BY car, time_bucket(INTERVAL 30 SECOND, ts)""",
        "flink": """SELECT car, COUNT(*), CAST(AVG(CAST(engine_temp AS DOUBLE)) AS FLOAT), CAST(MIN(engine_temp) AS FLOAT),
            CAST(MAX(engine_temp) AS FLOAT)
            FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '30' SECOND))
            GROUP BY car, window_start, window_end""",
        "flink_sink": "CAR STRING, VEHICLE_COUNT BIGINT, AVG_TEMP FLOAT, LOW_TEMP FLOAT, HIGH_TEMP FLOAT",
    },
    "udf_wasm": {
        "input": "car",
        "udf": "haversine",
        "about": "per car and 10 s tumbling window, COUNT and MAX of the distance to Berlin computed "
                 "by a WASM function (udfs/examples/haversine; the peers compute it in SQL)",
        "columns": [("car", "s"), ("window_start", "t"), ("n", "i"), ("max_km", "f")],
        "rivulet": """SELECT car, window_start, COUNT(*) AS n, MAX(haversine_km(lat, long, 52.52, 13.405)) AS max_km
            FROM source GROUP BY car, TUMBLE(ts, INTERVAL '10' SECOND)""",
        "datafusion": f"""SELECT car, date_bin(INTERVAL '10 seconds', CAST(ts AS TIMESTAMP)), COUNT(*),
            MAX({HAVERSINE.format(long='long')}) FROM src GROUP BY 1, 2""",
        "duckdb": f"""SELECT car, time_bucket(INTERVAL 10 SECOND, ts), COUNT(*),
            MAX({HAVERSINE.format(long='long')}) FROM src GROUP BY ALL""",
        "flink": f"""SELECT car, window_start, COUNT(*), MAX({HAVERSINE.format(long='`long`')})
            FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '10' SECOND))
            GROUP BY car, window_start, window_end""",
        "flink_sink": "car STRING, window_start TIMESTAMP(3), n BIGINT, max_km DOUBLE",
    },
    "nexmark_q0": {
        "input": "bids",
        "about": "Nexmark q0, pass-through: every bid",
        "columns": [("auction", "i"), ("bidder", "i"), ("price", "i"), ("date_time", "t"), ("extra", "s")],
        "rivulet": "SELECT auction, bidder, price, date_time, extra FROM source",
        "datafusion": "SELECT auction, bidder, price, date_time, extra FROM src",
        "duckdb": "SELECT auction, bidder, price, date_time, extra FROM src",
        "flink": "SELECT auction, bidder, price, date_time, extra FROM src",
        "flink_sink": "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING",
    },
    "nexmark_q1": {
        "input": "bids",
        "about": "Nexmark q1, currency conversion: every bid with its price times 0.908",
        "columns": [("auction", "i"), ("bidder", "i"), ("price", "f"), ("date_time", "t"), ("extra", "s")],
        "rivulet": "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM source",
        "datafusion": "SELECT auction, bidder, 0.908 * price, date_time, extra FROM src",
        "duckdb": "SELECT auction, bidder, 0.908 * price, date_time, extra FROM src",
        "flink": "SELECT auction, bidder, 0.908 * price, date_time, extra FROM src",
        "flink_sink": "auction BIGINT, bidder BIGINT, price DOUBLE, date_time TIMESTAMP(3), extra STRING",
    },
    "nexmark_q2": {
        "input": "bids",
        "about": "Nexmark q2, selection: the bids on every 123rd auction",
        "columns": [("auction", "i"), ("price", "i")],
        "rivulet": "SELECT auction, price FROM source WHERE auction % 123 = 0",
        "datafusion": "SELECT auction, price FROM src WHERE auction % 123 = 0",
        "duckdb": "SELECT auction, price FROM src WHERE auction % 123 = 0",
        "flink": "SELECT auction, price FROM src WHERE MOD(auction, 123) = 0",
        "flink_sink": "auction BIGINT, price BIGINT",
    },
    "nexmark_q5": {
        "input": "bids",
        "about": "Nexmark q5, hot items: per 10 s window every 2 s, the auction with the most bids "
                 "(a tie goes to the lowest auction id, where Nexmark keeps every tied auction)",
        "columns": [("auction", "i"), ("window_start", "t"), ("num", "i")],
        "rivulet": """SELECT auction, window_start, COUNT(*) AS num FROM source
            GROUP BY auction, HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
            ORDER BY COUNT(*) DESC, auction LIMIT 1""",
        "datafusion": """WITH b AS (SELECT auction, date_bin(INTERVAL '2 seconds', CAST(date_time AS TIMESTAMP)) AS s FROM src),
            w AS (SELECT auction, s AS ws FROM b UNION ALL SELECT auction, s - INTERVAL '2 seconds' FROM b
                  UNION ALL SELECT auction, s - INTERVAL '4 seconds' FROM b UNION ALL SELECT auction, s - INTERVAL '6 seconds' FROM b
                  UNION ALL SELECT auction, s - INTERVAL '8 seconds' FROM b),
            c AS (SELECT auction, ws, COUNT(*) AS num FROM w GROUP BY auction, ws),
            r AS (SELECT auction, ws, num, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY num DESC, auction) AS rn FROM c)
            SELECT auction, ws, num FROM r WHERE rn = 1""",
        "duckdb": """WITH b AS (SELECT auction, time_bucket(INTERVAL 2 SECOND, date_time) AS s FROM src),
            w AS (SELECT auction, s - k * INTERVAL 2 SECOND AS ws FROM b, range(5) AS r(k)),
            c AS (SELECT auction, ws, COUNT(*) AS num FROM w GROUP BY ALL)
            SELECT auction, ws, num FROM c QUALIFY ROW_NUMBER() OVER (PARTITION BY ws ORDER BY num DESC, auction) = 1""",
        "flink": """SELECT auction, window_start, num FROM (
              SELECT auction, window_start, num, ROW_NUMBER() OVER (PARTITION BY window_start, window_end
                ORDER BY num DESC, auction) AS rn FROM (
                SELECT auction, window_start, window_end, COUNT(*) AS num
                FROM TABLE(HOP(TABLE src, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
                GROUP BY auction, window_start, window_end))
            WHERE rn <= 1""",
        "flink_sink": "auction BIGINT, window_start TIMESTAMP(3), num BIGINT",
    },
    "nexmark_q7": {
        "input": "bids",
        "about": "Nexmark q7, highest bid: per 10 s tumbling window, the bid with the highest price "
                 "(a tie goes to the lowest auction, then bidder, where Nexmark keeps every tied bid)",
        "columns": [("auction", "i"), ("bidder", "i"), ("price", "i"), ("window_start", "t")],
        "rivulet": """SELECT auction, bidder, price, window_start FROM source
            GROUP BY auction, bidder, price, TUMBLE(date_time, INTERVAL '10' SECOND)
            ORDER BY price DESC, auction, bidder LIMIT 1""",
        "datafusion": """WITH b AS (SELECT auction, bidder, price,
                date_bin(INTERVAL '10 seconds', CAST(date_time AS TIMESTAMP)) AS ws FROM src),
            r AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY price DESC, auction, bidder) AS rn FROM b)
            SELECT auction, bidder, price, ws FROM r WHERE rn = 1""",
        "duckdb": """SELECT auction, bidder, price, time_bucket(INTERVAL 10 SECOND, date_time) AS ws FROM src
            QUALIFY ROW_NUMBER() OVER (PARTITION BY ws ORDER BY price DESC, auction, bidder) = 1""",
        "flink": """SELECT auction, bidder, price, window_start FROM (
              SELECT auction, bidder, price, window_start, ROW_NUMBER() OVER (PARTITION BY window_start, window_end
                ORDER BY price DESC, auction, bidder) AS rn
              FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(date_time), INTERVAL '10' SECOND)))
            WHERE rn <= 1""",
        "flink_sink": "auction BIGINT, bidder BIGINT, price BIGINT, window_start TIMESTAMP(3)",
    },
}

# The same query with the function in SQL on rivulet too: the WASM call's cost is the difference.
QUERIES["udf_native"] = dict(
    QUERIES["udf_wasm"], udf=None,
    about="udf_wasm with the distance computed in SQL by every engine",
    rivulet=f"""SELECT car, window_start, COUNT(*) AS n, MAX({HAVERSINE.format(long='long')}) AS max_km
        FROM source GROUP BY car, TUMBLE(ts, INTERVAL '10' SECOND)""")


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
            elif kind == "r":
                # REAL: a 32-bit float however the engine prints it
                t.append(struct.unpack("f", struct.pack("f", float(v)))[0])
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


def run_rivulet(binary, query, data, work, udfs, cores=1):
    """rivulet replay on `cores` cores (0 .. cores-1) with as many decoding workers."""
    qfile = os.path.join(work, "query.sql")
    with open(qfile, "w") as f:
        f.write(query["rivulet"])
    outdir = os.path.join(work, "rivulet-out")
    shutil.rmtree(outdir, ignore_errors=True)
    args = [binary, "replay", "--sql", qfile, "--input", data,
            "--rowtime", INPUTS[query.get("input", "ticker")]["rowtime"],
            "--lateness-ms", "1000", "--output-dir", outdir, "--workers", str(cores)]
    if cores > 1:
        # The harness runs pinned to one core; this engine takes the first `cores`.
        if (os.cpu_count() or 1) < cores:
            raise RuntimeError(f"rivulet_{cores}cores needs {cores} cores")
        args = ["taskset", "-c", f"0-{cores - 1}"] + args
    if query.get("udf"):
        args += ["--udf", os.path.join(udfs, query["udf"] + ".wasm")]
    start = time.perf_counter()
    p = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
            rows.append([o.get(c) for c, _ in query["columns"]])
    return secs, rows


def run_datafusion(sql, data, work):
    from datafusion import SessionConfig, SessionContext
    # DataFusion reads JSON lines from a file named .json.
    link = os.path.join(work, os.path.basename(data) + ".json")
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


def run_duckdb(sql, data, input_name):
    import duckdb
    con = duckdb.connect()
    con.execute("SET threads=1")
    source = (f"read_json('{data}', format='newline_delimited', "
              f"columns={{{INPUTS[input_name]['duckdb']}}})")
    con.execute("SET TimeZone='UTC'")
    start = time.perf_counter()
    rows = con.execute(sql.replace("FROM src", f"FROM {source}")).fetchall()
    secs = time.perf_counter() - start
    return secs, rows


def run_flink(query, data, columns, work):
    spec = INPUTS[query.get("input", "ticker")]
    from pyflink.table import EnvironmentSettings, TableEnvironment
    t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t.get_config().set("parallelism.default", "1")
    t.get_config().set("table.local-time-zone", "UTC")
    outdir = tempfile.mkdtemp(dir=work)
    t.execute_sql(f"""CREATE TABLE src ({spec['flink']},
      WATERMARK FOR {spec['rowtime']} AS {spec['rowtime']} - INTERVAL '1' SECOND)
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


def measure(engine, query, data, work, runs, rivulet, udfs):
    best, rows = None, None
    for _ in range(runs):
        if engine == "rivulet":
            secs, rows = run_rivulet(rivulet, query, data, work, udfs)
        elif engine == "rivulet_2cores":
            secs, rows = run_rivulet(rivulet, query, data, work, udfs, cores=2)
        elif engine == "datafusion":
            secs, rows = run_datafusion(query["datafusion"], data, work)
        elif engine == "duckdb":
            secs, rows = run_duckdb(query["duckdb"], data, query.get("input", "ticker"))
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
    p.add_argument("--udfs", default="udfs/build", help="where the WASM modules are")
    p.add_argument("--report", help="also write the report (benchmarks.md and its charts) here")
    p.add_argument("--scenarios", default="ticker,car,clickstream",
                   help="`rivulet bench` scenarios whose latency percentiles the report charts")
    a = p.parse_args()
    engines = [e for e in a.engines.split(",") if e]
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="rivulet-peers-")
    inputs = {}

    def data_for(name):
        """The input `name`, generated on first use."""
        if name not in inputs:
            path = a.input if (name == "ticker" and a.input) else os.path.join(work, name + ".ndjson")
            if path != a.input:
                INPUTS[name]["generate"](path, a.records)
            inputs[name] = (path, sum(1 for _ in open(path)))
        return inputs[name]

    results, failures = [], []
    for name in [q for q in a.queries.split(",") if q]:
        query = QUERIES[name]
        data, records = data_for(query.get("input", "ticker"))
        reference = None
        for engine in engines:
            try:
                secs, rows = measure(engine, query, data, work, a.runs, a.rivulet, a.udfs)
            except Exception as e:  # one engine failing one query does not stop the others
                failures.append(f"{name}: {engine} failed: {str(e)[-1500:]}")
                continue
            if reference is None:
                reference = (engine, rows)
            elif not same_rows(rows, reference[1]):
                failures.append(disagreement(name, reference[0], reference[1], engine, rows))
                continue
            results.append({"query": name, "input": query.get("input", "ticker"), "engine": engine,
                            "records": records, "secs": secs, "rows_per_s": records / secs,
                            "out_rows": len(rows)})
            print(f"{name:11} {engine:11} {secs:8.3f} s {records / secs:14,.0f} rows/s {len(rows):8} rows",
                  flush=True)
    records = max((r for _, r in inputs.values()), default=0)
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


# Flink's published Nexmark throughput per core (Flink 1.13; nexmark/nexmark's README: 8 task
# managers with one slot each, RocksDB state, exactly-once checkpoints, 100 M events), events/s.
FLINK_NEXMARK_PER_CORE = {"nexmark_q0": 155_000, "nexmark_q1": 158_000, "nexmark_q2": 175_000,
                          "nexmark_q5": 22_100, "nexmark_q7": 12_300}


def table(summary):
    """A Markdown table: rows/s per engine per query, and rivulet's ratio to each peer."""
    by, inputs = {}, {}
    for r in summary["results"]:
        by.setdefault(r["query"], {})[r["engine"]] = r["rows_per_s"]
        inputs[r["query"]] = (r.get("input", "ticker"), r["records"])
    engines = sorted({r["engine"] for r in summary["results"]},
                     key=lambda e: (not e.startswith("rivulet"), e))
    lines = [f"One core (rivulet_2cores: two), best of {summary['runs']} runs; input records per "
             "query in its row\n",
             "| query | input | " + " | ".join(engines) + " |",
             "| --- | --- |" + " --- |" * len(engines)]
    for q, got in by.items():
        cells = []
        for e in engines:
            v = got.get(e)
            if v is None:
                cells.append("—")
            elif e == "rivulet_2cores" and "rivulet" in got:
                cells.append(f"{v / 1e6:.2f} M ({v / got['rivulet']:.2f}× one core)")
            elif e == "rivulet" or "rivulet" not in got:
                cells.append(f"{v / 1e6:.2f} M")
            else:
                cells.append(f"{v / 1e6:.2f} M (rivulet {got['rivulet'] / v:.2f}×)")
        name, n = inputs[q]
        lines.append(f"| {q} | {n:,} {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def nexmark_table(summary):
    """rivulet's and Flink's Nexmark figures of this run beside Flink's published ones per core."""
    got = {(r["query"], r["engine"]): r["rows_per_s"] for r in summary["results"]}
    lines = ["| query | rivulet here | Flink here | Flink published, per core | rivulet ÷ published |",
             "| --- | --- | --- | --- | --- |"]
    for q, published in FLINK_NEXMARK_PER_CORE.items():
        r, f = got.get((q, "rivulet")), got.get((q, "flink"))
        lines.append(f"| {q} | {'—' if r is None else f'{r / 1e3:,.0f} K'} | "
                     f"{'—' if f is None else f'{f / 1e3:,.0f} K'} | {published / 1e3:,.1f} K | "
                     f"{'—' if r is None else f'{r / published:.1f}×'} |")
    return "\n".join(lines) + "\n"


def udf_line(summary):
    """rivulet's WASM function against the same function in SQL, as a sentence, or None."""
    got = {(r["query"], r["engine"]): r["rows_per_s"] for r in summary["results"]}
    wasm, native = got.get(("udf_wasm", "rivulet")), got.get(("udf_native", "rivulet"))
    if wasm is None or native is None:
        return None
    return (f"rivulet with the WASM function: {wasm / 1e6:.2f} M rows/s; with the same function in "
            f"SQL: {native / 1e6:.2f} M rows/s (WASM at {wasm / native:.2f}× native).")


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
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(engines), 1)
    for i, e in enumerate(engines):
        values = [next((r["rows_per_s"] / 1e6 for r in summary["results"]
                        if r["query"] == q and r["engine"] == e), 0) for q in queries]
        ax.bar([x + i * width for x in range(len(queries))], values, width, label=e)
    ax.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(queries))], queries,
                  rotation=30, ha="right")
    ax.set_ylabel("million rows/s (one core)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"best of {summary['runs']}, one core")
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
             "equals the first engine's (rows sorted, floating-point numbers to a relative 1e-9).",
             "`rivulet_2cores` is rivulet on two cores (`taskset -c 0-1`, `--workers 2`: decoding split",
             "across threads and overlapped with the SQL of the batch before).", "",
             "## Throughput", "", table(summary), "![rows/s per engine per query](benchmarks/throughput.svg)", ""]
    for q in queries:
        lines.append(f"- **{q}**: {QUERIES[q]['about']}.")
    udf = udf_line(summary)
    if udf:
        lines += ["", udf]
    if any(q.startswith("nexmark_") for q in queries):
        lines += ["", "## Nexmark", "",
                  "Bids generated as Nexmark's generator makes them (auctions opening over time, most bids",
                  "on a few recent ones), one core here, against the per-core figures Flink publishes for",
                  "Flink 1.13 (nexmark/nexmark: 8 task managers × 1 slot, RocksDB, exactly-once, 100 M",
                  "events). Those figures include state on disk and checkpoints, and their q5/q7 keep every",
                  "tied auction or bid; here state is in memory and one tie-broken row is kept, so the",
                  "published column is a reference point, not a like-for-like peer (the Flink column is).", "",
                  nexmark_table(summary)]
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
