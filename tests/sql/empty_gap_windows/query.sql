-- Long gaps in the data: windows with no rows produce no output rows.
SELECT k AS k,
       COUNT(*) AS cnt,
       SUM(v) AS total,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws,
       TUMBLE_END(ts, INTERVAL '10' SECOND) AS we
FROM source
GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND);
