-- Rows arrive up to 2 s out of order, with 3 s of lateness none is late, so the result is the
-- same as for the sorted input. Values are powers of two.
SELECT k AS k,
       COUNT(*) AS cnt,
       SUM(v) AS total,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws
FROM source
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND);
