-- Session windows with a 5 s gap per user. The row at 00:00:07 for u1 arrives after 00:00:10
-- and bridges the u1 sessions {0, 3} and {10}. With 10 s of lateness it is not late.
-- The u2 rows at 12 and 17 are exactly 5 s apart: not strictly less than the gap, so they split.
SELECT uid AS uid,
       COUNT(*) AS cnt,
       SUM(v) AS total,
       SESSION_START(ts, INTERVAL '5' SECOND) AS ss,
       SESSION_END(ts, INTERVAL '5' SECOND) AS se
FROM source
GROUP BY uid, SESSION(ts, INTERVAL '5' SECOND);
