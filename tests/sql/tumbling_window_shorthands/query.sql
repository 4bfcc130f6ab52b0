-- No key: one row per non-empty 5 s window. window_start / window_end are the bare-identifier
-- shorthands for TUMBLE_START / TUMBLE_END. ts holds epoch milliseconds (integers).
SELECT COUNT(*) AS cnt,
       SUM(v) AS total,
       window_start AS ws,
       window_end AS we
FROM source
GROUP BY TUMBLE(ts, INTERVAL '5' SECOND);
