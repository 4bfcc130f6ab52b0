-- KDA's date and time conversions (Java patterns), UNIX_TIMESTAMP and TO_TIMESTAMP in
-- milliseconds, MONOTONIC; and EVERY / ANY over a one-minute window.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    day_date     DATE,
    clock_time   TIME,
    day_text     VARCHAR(24),
    clock_text   VARCHAR(8),
    arrival_ms   BIGINT,
    from_ms      TIMESTAMP,
    v            INTEGER);
CREATE OR REPLACE STREAM "FLAGS" (all_positive BOOLEAN, any_large BOOLEAN, n INTEGER);

CREATE OR REPLACE PUMP "CONVERT_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM CHAR_TO_DATE('dd/MM/yyyy', "day"),
                CHAR_TO_TIME('HH:mm:ss', "clock"),
                DATE_TO_CHAR('EEE d MMM yyyy', CHAR_TO_DATE('dd/MM/yyyy', "day")),
                TIME_TO_CHAR('hh:mm a', CHAR_TO_TIME('HH:mm:ss', "clock")),
                UNIX_TIMESTAMP(ROWTIME),
                TO_TIMESTAMP("ms"),
                MONOTONIC("v")
  FROM "SOURCE_SQL_STREAM_001";

CREATE OR REPLACE PUMP "FLAG_PUMP" AS INSERT INTO "FLAGS"
  SELECT STREAM EVERY("v" > 0), ANY("v" > 10), COUNT(*)
  FROM "SOURCE_SQL_STREAM_001"
  GROUP BY STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '1' MINUTE);
