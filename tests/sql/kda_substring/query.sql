-- The developer guide's SUBSTRING example: the domain name of a referrer URL, between "www." and
-- ".com", found with POSITION; ROWTIME is the row's arrival time.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    ingest_time TIMESTAMP,
    referrer VARCHAR(32));

CREATE OR REPLACE PUMP "myPUMP" AS
   INSERT INTO "DESTINATION_SQL_STREAM"
      SELECT STREAM
         ROWTIME,
         SUBSTRING("referrer", 12, (POSITION('.com' IN "referrer") - POSITION('www.' IN "referrer") - 4))
      FROM "SOURCE_SQL_STREAM_001";
