-- Two grouping columns plus the window. Quantities are powers of two, so each total
-- identifies exactly which rows were summed.
SELECT region AS region,
       sym AS sym,
       COUNT(*) AS cnt,
       SUM(qty) AS total_qty,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws
FROM source
GROUP BY region, sym, TUMBLE(ts, INTERVAL '10' SECOND);
