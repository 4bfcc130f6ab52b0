-- The developer guide's web-log example: W3C_LOG_PARSE splits an Apache common-log line into
-- its seven fields, read through a nested query aliased l(r). The declared VARCHAR(16) columns
-- cut the longer values (the date) to 16 characters.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    column1 VARCHAR(16),
    column2 VARCHAR(16),
    column3 VARCHAR(16),
    column4 VARCHAR(16),
    column5 VARCHAR(64),
    column6 VARCHAR(16),
    column7 VARCHAR(16));

CREATE OR REPLACE PUMP "myPUMP" AS
INSERT INTO "DESTINATION_SQL_STREAM"
        SELECT STREAM
            l.r.COLUMN1,
            l.r.COLUMN2,
            l.r.COLUMN3,
            l.r.COLUMN4,
            l.r.COLUMN5,
            l.r.COLUMN6,
            l.r.COLUMN7
        FROM (SELECT STREAM W3C_LOG_PARSE("log", 'COMMON')
              FROM "SOURCE_SQL_STREAM_001") AS l(r);
