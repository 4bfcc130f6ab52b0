-- The first statement writes the filtered rows to the stream big_trades (an output of its own),
-- the second aggregates big_trades in tumbling 10 s windows.
INSERT INTO big_trades
SELECT sym AS sym, price AS price, ts AS ts
FROM source
WHERE price > 100;

SELECT sym AS sym,
       COUNT(*) AS cnt,
       TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws
FROM big_trades
GROUP BY sym, TUMBLE(ts, INTERVAL '10' SECOND);
