-- Grouped by a ROWTIME window and an event-time minute, as the KDA guide shows: results keyed by
-- event time, emitted on ROWTIME. Also: a quote inside a string literal, SIMILAR TO with SQL's
-- patterns (anchored, so '%TECH%' takes BIOTECHNOLOGY and 'X_' only two-letter X symbols), and
-- CURRENT_ROW_TIMESTAMP.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    event_minute TIMESTAMP, ticker_symbol VARCHAR(4), trades INTEGER, note VARCHAR(16), stamped BOOLEAN);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM FLOOR(EVENT_TIME TO MINUTE), ticker_symbol, COUNT(*), 'it''s', MAX(CURRENT_ROW_TIMESTAMP) IS NOT NULL
  FROM "SOURCE_SQL_STREAM_001"
  WHERE sector SIMILAR TO '%TECH%' AND NOT ticker_symbol SIMILAR TO 'X_'
  GROUP BY ticker_symbol, FLOOR(EVENT_TIME TO MINUTE),
           STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND);
