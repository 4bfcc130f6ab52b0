-- Technology ticks with their event time as ROWTIME.
SELECT ticker_symbol,
       price,
       UPPER(SUBSTR(sector, 1, 4)) AS sector_code,
       ROWTIME
FROM SOURCE_SQL_STREAM_001
WHERE sector = 'TECHNOLOGY';
