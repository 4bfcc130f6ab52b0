-- HAVING on COUNT(*), arithmetic, ROUND and CASE applied to aggregates.
SELECT sym AS sym,
       COUNT(*) AS cnt,
       MAX(price) - MIN(price) AS spread,
       ROUND(AVG(price), 2) AS avg_price,
       CASE WHEN SUM(qty) >= 100 THEN 'high' ELSE 'low' END AS volume_class,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws
FROM source
GROUP BY sym, TUMBLE(ts, INTERVAL '10' SECOND)
HAVING COUNT(*) >= 2;
