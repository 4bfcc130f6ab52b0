-- The developer guide's VARIABLE_COLUMN_LOG_PARSE example: a comma-separated field split into
-- typed columns named in a list; with an escape character and quotes, a delimiter inside a
-- value stays in it. A value that is not a number fails its row, which goes to the error output.
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM"(
            "column_A" VARCHAR(16),
            "column_B" VARCHAR(16),
            "COL_1" VARCHAR(16),
            "COL_2" VARCHAR(16),
            "COL_3" INTEGER);

CREATE OR REPLACE PUMP "SECOND_STREAM_PUMP" AS
INSERT INTO "DESTINATION_SQL_STREAM"
   SELECT STREAM  t."Col_A", t."Col_B",
                  t.r."COL_1", t.r."COL_2", t.r."COL_3" + 1
   FROM (SELECT STREAM
           "Col_A", "Col_B",
           VARIABLE_COLUMN_LOG_PARSE ("Col_E_Unstructured",
                                      'COL_1 TYPE VARCHAR(16), COL_2 TYPE VARCHAR(4), COL_3 TYPE INTEGER',
                                      ',', '\', '"') AS r
         FROM "SOURCE_SQL_STREAM_001") as t;
