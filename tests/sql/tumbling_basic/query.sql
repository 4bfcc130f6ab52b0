-- Tumbling 10 s windows per symbol with the usual aggregates and the window bounds.
SELECT sym AS sym,
       COUNT(*) AS cnt,
       SUM(price) AS total,
       MIN(price) AS lo,
       MAX(price) AS hi,
       AVG(price) AS avg_price,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws,
       TUMBLE_END(ts, INTERVAL '10' SECOND) AS we
FROM source
GROUP BY sym, TUMBLE(ts, INTERVAL '10' SECOND);
