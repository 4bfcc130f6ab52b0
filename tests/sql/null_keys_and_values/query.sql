-- A NULL key forms its own group, aggregates skip NULL values: COUNT(*) counts rows, COUNT(v)
-- counts non-null values, and SUM/MIN/MAX/AVG over only NULLs are NULL.
SELECT k AS k,
       COUNT(*) AS cnt,
       COUNT(v) AS cnt_v,
       SUM(v) AS total,
       MIN(v) AS lo,
       MAX(v) AS hi,
       AVG(v) AS avg_v,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws
FROM source
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND);
