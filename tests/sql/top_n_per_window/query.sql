-- ORDER BY … LIMIT in a windowed statement applies to each window's rows: the busiest symbol of
-- every 20-second window, every 10 seconds (ties by symbol); and the two busiest of every
-- 10-second tumbling window.
INSERT INTO busiest
SELECT sym AS sym, COUNT(*) AS trades,
       HOP_END(ts, INTERVAL '10' SECOND, INTERVAL '20' SECOND) AS window_end
FROM source
GROUP BY sym, HOP(ts, INTERVAL '10' SECOND, INTERVAL '20' SECOND)
ORDER BY trades DESC, sym
LIMIT 1;

SELECT sym AS sym, COUNT(*) AS trades, TUMBLE_END(ts, INTERVAL '10' SECOND) AS window_end
FROM source
GROUP BY sym, TUMBLE(ts, INTERVAL '10' SECOND)
ORDER BY COUNT(*) DESC, sym
LIMIT 2
