-- A stagger window, as the KDA developer guide writes it: per ticker and event-time minute, a
-- window opens with the key's first row (by ROWTIME) and closes one minute later. A row of the
-- same key arriving after that opens a new window.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    event_time    TIMESTAMP,
    ticker_symbol VARCHAR(4),
    ticker_count  INTEGER);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM FLOOR(EVENT_TIME TO MINUTE), TICKER_SYMBOL, COUNT(*) AS TICKER_COUNT
  FROM "SOURCE_SQL_STREAM_001"
  WINDOWED BY STAGGER (
      PARTITION BY FLOOR(EVENT_TIME TO MINUTE), TICKER_SYMBOL RANGE INTERVAL '1' MINUTE);
