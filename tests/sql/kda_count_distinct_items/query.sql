-- COUNT_DISTINCT_ITEMS_TUMBLING over a filtered cursor, its column selected by name; the count
-- is exact. A second pump windows the same input with COUNT(DISTINCT …) and STEP, the form the
-- SQL reference gives for an exact count: both must agree.
CREATE OR REPLACE STREAM "DISTINCT_STREAM" (distinct_tickers BIGINT);
CREATE OR REPLACE STREAM "EXACT_STREAM" (distinct_tickers BIGINT);

CREATE OR REPLACE PUMP distinct_pump AS INSERT INTO "DISTINCT_STREAM"
  SELECT STREAM NUMBER_OF_DISTINCT_ITEMS
  FROM TABLE(COUNT_DISTINCT_ITEMS_TUMBLING(
      CURSOR(SELECT STREAM * FROM source_sql_stream_001 WHERE "TICKER" <> 'TBV'),
      'TICKER',
      30));

CREATE OR REPLACE PUMP exact_pump AS INSERT INTO "EXACT_STREAM"
  SELECT STREAM COUNT(DISTINCT "TICKER")
  FROM source_sql_stream_001
  WHERE "TICKER" <> 'TBV'
  GROUP BY STEP(source_sql_stream_001.ROWTIME BY INTERVAL '30' SECOND);
