-- One output row per input row: the sum and count over the rows of the same key with time in
-- [ts - 10 s, ts], both ends inclusive, including rows with the same time that come later
-- in the file (the two "a" rows at 00:00:12 both see each other).
SELECT k AS k,
       v AS v,
       ts AS ts,
       SUM(v) OVER (PARTITION BY k ORDER BY ts
                    RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS sum_10s,
       COUNT(*) OVER (PARTITION BY k ORDER BY ts
                      RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS cnt_10s
FROM source;
