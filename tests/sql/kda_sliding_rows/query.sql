-- A sliding window of rows: per ticker, the current row and the one before it.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(4), last_two DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM ticker_symbol, SUM(price) OVER (PARTITION BY ticker_symbol ROWS 1 PRECEDING)
  FROM "SOURCE_SQL_STREAM_001";
