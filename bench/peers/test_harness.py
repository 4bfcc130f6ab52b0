"""The harness's agreement check: engines' outputs in their own shapes compare equal when they
are the same rows, and a row that differs is caught."""
import datetime
import unittest

import harness

COLUMNS = [("ticker_symbol", "s"), ("window_start", "t"), ("n", "i"), ("avg_price", "f")]


class Agreement(unittest.TestCase):
    def test_the_same_rows_in_each_engines_shape_agree(self):
        utc = datetime.timezone.utc
        rivulet = [["T001", "2026-01-01T00:00:10.000Z", 3, 250.12333333333333]]
        datafusion = [("T001", datetime.datetime(2026, 1, 1, 0, 0, 10), 3, 250.123333333333)]
        duckdb = [("T001", datetime.datetime(2026, 1, 1, 0, 0, 10, tzinfo=utc), 3, 250.12333333333)]
        flink = [["T001", "2026-01-01 00:00:10", 3, 250.1233333333333]]
        want = harness.canonical(rivulet, COLUMNS)
        for other in (datafusion, duckdb, flink):
            self.assertTrue(harness.same_rows(harness.canonical(other, COLUMNS), want))

    def test_averages_summed_in_another_order_agree(self):
        # Seen between rivulet and Flink: the same average, 251.9311875 ± an ulp or two.
        a = harness.canonical([["T070", "2026-01-01T00:01:20Z", 960, 251.93118749999998]], COLUMNS)
        b = harness.canonical([["T070", "2026-01-01T00:01:20Z", 960, 251.93118750000003]], COLUMNS)
        self.assertTrue(harness.same_rows(a, b))

    def test_a_differing_value_or_a_missing_row_is_caught(self):
        a = harness.canonical([["T001", "2026-01-01T00:00:10Z", 3, 1.5],
                               ["T002", "2026-01-01T00:00:10Z", 1, 2.0]], COLUMNS)
        off_by_one = harness.canonical([["T001", "2026-01-01T00:00:10Z", 4, 1.5],
                                        ["T002", "2026-01-01T00:00:10Z", 1, 2.0]], COLUMNS)
        missing = harness.canonical([["T001", "2026-01-01T00:00:10Z", 3, 1.5]], COLUMNS)
        shifted = harness.canonical([["T001", "2026-01-01T00:00:10.001Z", 3, 1.5],
                                     ["T002", "2026-01-01T00:00:10Z", 1, 2.0]], COLUMNS)
        slightly_off = harness.canonical([["T001", "2026-01-01T00:00:10Z", 3, 1.5000001],
                                          ["T002", "2026-01-01T00:00:10Z", 1, 2.0]], COLUMNS)
        for other in (off_by_one, missing, shifted, slightly_off):
            self.assertFalse(harness.same_rows(a, other))
        message = harness.disagreement("tumbling", "rivulet", a, "duckdb", off_by_one)
        self.assertIn("only rivulet", message)
        self.assertIn("4", message)

    def test_the_generator_is_reproducible_and_ordered_in_event_time(self):
        import os
        import tempfile
        d = tempfile.mkdtemp()
        a, b = os.path.join(d, "a"), os.path.join(d, "b")
        harness.generate(a, 500)
        harness.generate(b, 500)
        with open(a) as fa, open(b) as fb:
            la, lb = fa.read(), fb.read()
        self.assertEqual(la, lb)
        import json
        times = [json.loads(l)["event_time"] for l in la.splitlines()]
        self.assertEqual(times, sorted(times))
        self.assertEqual(times[0], "2026-01-01T00:00:00.000Z")
        self.assertEqual(times[10], "2026-01-01T00:00:00.001Z")

    def test_every_input_is_reproducible_and_ordered_in_event_time(self):
        import json
        import os
        import tempfile
        d = tempfile.mkdtemp()
        for name, spec in harness.INPUTS.items():
            a, b = os.path.join(d, name + "a"), os.path.join(d, name + "b")
            spec["generate"](a, 300)
            spec["generate"](b, 300)
            with open(a) as fa, open(b) as fb:
                la, lb = fa.read(), fb.read()
            self.assertEqual(la, lb, name)
            rows = [json.loads(l) for l in la.splitlines()]
            self.assertEqual(len(rows), 300, name)
            times = [r[spec["rowtime"]] for r in rows]
            self.assertEqual(times, sorted(times), name)

    def test_every_query_names_its_input_and_reads_every_engine(self):
        for name, q in harness.QUERIES.items():
            self.assertIn(q.get("input", "ticker"), harness.INPUTS, name)
            for engine in ("rivulet", "datafusion", "duckdb", "flink", "flink_sink", "columns"):
                self.assertIn(engine, q, name)
            # Flink's sink has a column per output column.
            self.assertEqual(len(q["flink_sink"].split(",")), len(q["columns"]), name)

    def test_a_real_column_compares_as_32_bit(self):
        cols = [("avg", "r")]
        # 256/3 as rivulet prints a REAL (shortest form), and DuckDB's REAL read back as a double
        a = harness.canonical([[85.333336]], cols)
        b = harness.canonical([[85.33333587646484]], cols)
        self.assertTrue(harness.same_rows(a, b))
        self.assertFalse(harness.same_rows(a, harness.canonical([[85.3334]], cols)))

    def test_the_report_tables_carry_every_ratio(self):
        summary = {"runs": 1, "results": [
            {"query": "nexmark_q0", "input": "bids", "engine": "rivulet", "records": 10, "rows_per_s": 310_000.0},
            {"query": "nexmark_q0", "input": "bids", "engine": "flink", "records": 10, "rows_per_s": 100_000.0},
            {"query": "udf_wasm", "input": "car", "engine": "rivulet", "records": 10, "rows_per_s": 1e6},
            {"query": "udf_native", "input": "car", "engine": "rivulet", "records": 10, "rows_per_s": 2e6},
            {"query": "udf_native", "input": "car", "engine": "rivulet_2cores", "records": 10,
             "rows_per_s": 3.6e6},
        ]}
        self.assertIn("rivulet 3.10×", harness.table(summary))
        # Two cores against rivulet's own one core, not against a peer.
        self.assertIn("| udf_native | 10 car | 2.00 M | 3.60 M (1.80× one core) | — |",
                      harness.table(summary))
        self.assertIn("| nexmark_q0 | 310 K | 100 K | 155.0 K | 2.0× |", harness.nexmark_table(summary))
        self.assertIn("0.50× native", harness.udf_line(summary))


if __name__ == "__main__":
    unittest.main()
