-- String manipulation and KDA's time functions on a web log: the request's timestamp text
-- parsed with a Java-style pattern, its delay behind ROWTIME, the path cut from the request.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    host      VARCHAR(16),
    req_time  TIMESTAMP,
    req_day   VARCHAR(10),
    delay_ms  BIGINT,
    path      VARCHAR(32),
    verb      VARCHAR(8));
CREATE OR REPLACE PUMP "LOG_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM
      LOWER(host),
      CHAR_TO_TIMESTAMP('dd/MMM/yyyy:HH:mm:ss', request_time),
      TIMESTAMP_TO_CHAR('yyyy-MM-dd', CHAR_TO_TIMESTAMP('dd/MMM/yyyy:HH:mm:ss', request_time)),
      TSDIFF(CHAR_TO_TIMESTAMP('dd/MMM/yyyy:HH:mm:ss', request_time), ROWTIME),
      SUBSTRING(request FROM POSITION(' ' IN request) + 1 FOR 12),
      UPPER(SUBSTRING(request FROM 1 FOR POSITION(' ' IN request) - 1))
  FROM "SOURCE_SQL_STREAM_001"
  WHERE request LIKE 'get %' OR request LIKE 'post %';
