-- Average viewing per active user per UTC day: total watch time that day over
-- the users with any watch time that day. {from} and {to} (YYYY-MM-DD,
-- inclusive) are substituted by the caller after validation.
--
-- The total is summed in whole microseconds (what each watch_seconds was
-- made from), not in floating point: a sum of doubles depends on the order
-- the engine adds them in, which follows how the rows were loaded, so the
-- same data loaded with more or fewer workers would differ in the last digit.
SELECT view_date,
       COUNT(*) AS active_users,
       CAST(SUM(CAST(ROUND(watch_seconds * 1000000) AS BIGINT)) AS DOUBLE PRECISION) / 1000000 / COUNT(*)
           AS avg_watch_seconds_per_user
FROM analytics.daily_user_viewing
WHERE view_date BETWEEN CAST('{from}' AS DATE) AND CAST('{to}' AS DATE)
GROUP BY view_date
ORDER BY view_date;
