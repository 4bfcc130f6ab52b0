-- Two in-application streams: a continuous filter, then a one-minute STEP window over the
-- filtered stream's ROWTIME. Unquoted identifiers are upper-cased (TICKER_SYMBOL matches the
-- input's TICKER_SYMBOL); the quoted "price" matches only price.
CREATE OR REPLACE STREAM "TECH_STREAM" (ticker_symbol VARCHAR(4), "price" DOUBLE);
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    ticker_symbol VARCHAR(4),
    minute_start  TIMESTAMP,
    trades        INTEGER,
    avg_price     DOUBLE);

/* The window's pump comes first in the file; it runs after the pump it reads from. */
CREATE OR REPLACE PUMP "WINDOW_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM ticker_symbol,
         STEP("TECH_STREAM".ROWTIME BY INTERVAL '60' SECOND),
         COUNT(*),
         AVG("price")
  FROM "TECH_STREAM"
  GROUP BY ticker_symbol, STEP("TECH_STREAM".ROWTIME BY INTERVAL '60' SECOND);

CREATE OR REPLACE PUMP "FILTER_PUMP" AS INSERT INTO "TECH_STREAM"
  SELECT STREAM ticker_symbol, "price"
  FROM "SOURCE_SQL_STREAM_001"
  WHERE sector = 'TECHNOLOGY';
