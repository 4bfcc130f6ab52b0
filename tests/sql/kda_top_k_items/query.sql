-- The developer guide's "most frequently occurring values" example: per one-minute window of
-- ROWTIME, the two tickers seen most often (ties by value), most frequent first.
CREATE OR REPLACE STREAM DESTINATION_SQL_STREAM (
  "TICKER" VARCHAR(4),
  "MOST_FREQUENT_VALUES" BIGINT
);

CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM *
        FROM TABLE (TOP_K_ITEMS_TUMBLING(
            CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"),
            'TICKER',   -- name of column in single quotes
            2,          -- number of the most frequently occurring values
            60          -- tumbling window size in seconds
            )
        );
