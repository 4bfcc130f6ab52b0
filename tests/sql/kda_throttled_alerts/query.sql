-- The developer guide's alert examples: a continuous filter keeps the trades whose price moved
-- by more than 1 %; a sliding one-minute COUNT in a nested query, filtered outside it, lets
-- only the first alert of a ticker within a minute through (throttled alerts).
CREATE OR REPLACE STREAM "CHANGE_STREAM" (ticker_symbol VARCHAR(4), sector VARCHAR(12), change DOUBLE, price DOUBLE);
CREATE OR REPLACE PUMP "change_pump" AS INSERT INTO "CHANGE_STREAM"
  SELECT STREAM ticker_symbol, sector, change, price FROM "SOURCE_SQL_STREAM_001"
  WHERE (ABS(Change / (Price - Change)) * 100) > 1;
CREATE OR REPLACE STREAM TRIGGER_COUNT_STREAM (ticker_symbol VARCHAR(4), change REAL, trigger_count INTEGER);
CREATE OR REPLACE PUMP trigger_count_pump AS INSERT INTO TRIGGER_COUNT_STREAM
SELECT STREAM ticker_symbol, change, trigger_count
FROM (
    SELECT STREAM ticker_symbol, change, COUNT(*) OVER W1 as trigger_count
    FROM "CHANGE_STREAM"
    WINDOW W1 AS (PARTITION BY ticker_symbol RANGE INTERVAL '1' MINUTE PRECEDING)
)
WHERE trigger_count = 1;
