-- COUNT(DISTINCT x) ignores NULL x, STDDEV is the sample standard deviation (STDDEV_SAMP)
-- and ignores NULL v. Every group has at least two non-null v.
SELECT k AS k,
       COUNT(*) AS cnt,
       COUNT(DISTINCT x) AS n_distinct,
       STDDEV(v) AS sd,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws
FROM source
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND);
