-- The developer guide's REGEX_LOG_PARSE example: the pattern's groups become COLUMN1, COLUMN2, …
-- of a row read through a nested query. A log line the pattern does not match as a whole gives
-- a NULL row, so NULL columns.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (logMsg VARCHAR(250), match1 VARCHAR(50), match2 VARCHAR(50));

CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM T.LOGMSG, T.REC.COLUMN1, T.REC.COLUMN2
    FROM
         (SELECT STREAM LOGMSG,
             REGEX_LOG_PARSE(LOGMSG, '(\w.+) (\d.+) (\w.+) (\w.+)') AS REC
             FROM SOURCE_SQL_STREAM_001) AS T;
