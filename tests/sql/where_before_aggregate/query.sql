-- WHERE runs before the aggregation, the group key is an expression (UPPER(sym)).
-- The filtered-out row at 00:01:00 never reaches the window, so it does not advance the
-- watermark and the rows after it are not late.
SELECT UPPER(sym) AS sym_u,
       COUNT(*) AS cnt,
       SUM(qty) AS total_qty,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws
FROM source
WHERE qty > 10
GROUP BY UPPER(sym), TUMBLE(ts, INTERVAL '10' SECOND);
