-- The developer guide's reference-data example: each trade joined to the company name that a
-- reference table (a CSV file, given with --reference) holds for its ticker; a ticker the table
-- does not list gets a NULL company (LEFT JOIN). Rows keep their input order.
CREATE STREAM "DESTINATION_SQL_STREAM" (
   ticker_symbol VARCHAR(4),
   "Company" varchar(20),
   sector VARCHAR(12),
   change DOUBLE,
   price DOUBLE);

CREATE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
   SELECT STREAM ticker_symbol, "c"."Company", sector, change, price
   FROM "SOURCE_SQL_STREAM_001" LEFT JOIN "CompanyName" as "c"
   ON "SOURCE_SQL_STREAM_001".ticker_symbol = "c"."Ticker";

-- The same join in a windowed pump: trades per company in each 10-second window of ROWTIME.
CREATE OR REPLACE STREAM "COMPANY_TRADES" ("Company" VARCHAR(20), trades INTEGER);
CREATE OR REPLACE PUMP "COUNT_PUMP" AS INSERT INTO "COMPANY_TRADES"
   SELECT STREAM "c"."Company", COUNT(*)
   FROM "SOURCE_SQL_STREAM_001" LEFT JOIN "CompanyName" AS "c"
   ON "SOURCE_SQL_STREAM_001".ticker_symbol = "c"."Ticker"
   GROUP BY "c"."Company", STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '10' SECOND);
