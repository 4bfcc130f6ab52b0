-- 1 s of lateness. Rows whose window already ended at or before the watermark go to the error
-- output as "late" and count nowhere, the row at 00:00:09.600 is behind but still in time.
SELECT k AS k,
       COUNT(*) AS cnt,
       SUM(v) AS total,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws
FROM source
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND);
