-- The sample application of the original Streaming Analytics Pipeline solution, unchanged:
-- per car, 30-second tumbling windows on ROWTIME (here the records' `ts`, via --rowtime).
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (car VARCHAR(8), vehicle_count INTEGER,
  avg_temp REAL, low_temp REAL, high_temp REAL);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
SELECT STREAM "car", COUNT(*), AVG("engine_temp"), MIN("engine_temp"), MAX("engine_temp")
FROM "SOURCE_SQL_STREAM_001"
GROUP BY "car", FLOOR(("SOURCE_SQL_STREAM_001".ROWTIME - TIMESTAMP '1970-01-01 00:00:00') SECOND / 30 TO SECOND);
