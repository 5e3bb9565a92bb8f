-- Rebuilds the analytics of the days in the temp table touched_days from
-- core. Included by the loads and by rebuild_analytics.sql; the day_viewing
-- temp table it makes is dropped at its end.

-- Each session's watch time per UTC day: sessions last at most 24 hours, so
-- a session falls on its start day and at most the next one. Summed per day,
-- channel and user once; both analytics tables aggregate that (a user counts
-- once per channel and day, so reach and channels are plain counts).
-- Core is selected by its stored event_date (the start day), not by an
-- expression over start_time, so that a block's min/max of the column can
-- rule it out: DuckDB's zone maps then skip the blocks of days the load did
-- not touch, and a day's load reads those days of core rather than all of it
-- (bench/daily_loads.sh). On Redshift, zone maps skip blocks by it only as
-- far as the table is sorted by event_date (its sort key is AUTO, which may
-- or may not choose it; rows since the last sort are scanned).
DROP TABLE IF EXISTS day_viewing;
CREATE TEMP TABLE day_viewing AS
SELECT view_date, channel_id, user_id, SUM(watch_us) AS watch_us, COUNT(*) AS sessions
FROM (
    SELECT CAST(start_time AS DATE) AS view_date, channel_id, user_id,
           DATEDIFF('microsecond', start_time,
                    LEAST(end_time, CAST(CAST(start_time AS DATE) + 1 AS TIMESTAMP))) AS watch_us
    FROM core.viewing_sessions
    WHERE event_date IN (SELECT view_date FROM touched_days)
    UNION ALL
    SELECT CAST(CAST(start_time AS DATE) + 1 AS DATE) AS view_date, channel_id, user_id,
           DATEDIFF('microsecond', CAST(CAST(start_time AS DATE) + 1 AS TIMESTAMP), end_time) AS watch_us
    FROM core.viewing_sessions
    WHERE event_date IN (SELECT CAST(view_date - 1 AS DATE) FROM touched_days)
      AND end_time > CAST(CAST(start_time AS DATE) + 1 AS TIMESTAMP)
) parts
GROUP BY view_date, channel_id, user_id;

DELETE FROM analytics.daily_channel_viewing WHERE view_date IN (SELECT view_date FROM touched_days);
INSERT INTO analytics.daily_channel_viewing (view_date, channel_id, watch_seconds, reach, sessions)
SELECT view_date, channel_id, CAST(SUM(watch_us) AS DOUBLE PRECISION) / 1000000, COUNT(*), SUM(sessions)
FROM day_viewing
GROUP BY view_date, channel_id;

DELETE FROM analytics.daily_user_viewing WHERE view_date IN (SELECT view_date FROM touched_days);
INSERT INTO analytics.daily_user_viewing (view_date, user_id, watch_seconds, channels, sessions)
SELECT view_date, user_id, CAST(SUM(watch_us) AS DOUBLE PRECISION) / 1000000, COUNT(*), SUM(sessions)
FROM day_viewing
GROUP BY view_date, user_id;

DROP TABLE day_viewing;
