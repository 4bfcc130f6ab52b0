-- Moving average of the current row and the two rows before it in the same key, ordered by
-- (time, file order). ROWS frames ignore time distance (the row at 00:00:30). Of the two "a"
-- rows at 00:00:08 the one earlier in the file comes first.
SELECT k AS k,
       v AS v,
       ts AS ts,
       AVG(v) OVER (PARTITION BY k ORDER BY ts
                    ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg3
FROM source;
