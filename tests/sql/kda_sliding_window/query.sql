-- A sliding window as the KDA developer guide writes it: per ticker, the average and maximum
-- price over the rows of the last 10 seconds of ROWTIME (a named window, ordered by ROWTIME
-- implicitly, ending at the current row).
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    ticker_symbol VARCHAR(4), price DOUBLE, avg_price DOUBLE, max_price DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM ticker_symbol, price,
         AVG(price) OVER W1,
         MAX(price) OVER W1
  FROM "SOURCE_SQL_STREAM_001"
  WINDOW W1 AS (PARTITION BY ticker_symbol RANGE INTERVAL '10' SECOND PRECEDING);
