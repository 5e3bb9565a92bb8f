-- Average viewing per active user per UTC day: total watch time that day over
-- the users with any watch time that day. {from} and {to} (YYYY-MM-DD,
-- inclusive) are substituted by the caller after validation.
SELECT view_date,
       COUNT(*) AS active_users,
       SUM(watch_seconds) / COUNT(*) AS avg_watch_seconds_per_user
FROM analytics.daily_user_viewing
WHERE view_date BETWEEN CAST('{from}' AS DATE) AND CAST('{to}' AS DATE)
GROUP BY view_date
ORDER BY view_date;
