-- Hopping windows of 10 s every 5 s: each row falls in two windows [5k, 5k + 10).
SELECT k AS k,
       COUNT(*) AS cnt,
       SUM(v) AS total,
       HOP_START(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS ws,
       HOP_END(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS we
FROM source
GROUP BY k, HOP(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND);
