-- SELECT STREAM * into a declared stream: the input's columns, in order, take the stream's names
-- and types (VARCHAR(2) cuts the symbol).
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (sym VARCHAR(2), px DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM * FROM "SOURCE_SQL_STREAM_001";
