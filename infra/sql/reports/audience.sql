-- Viewing per audience segment per UTC day: for each value of one
-- demographic attribute (age band, gender or region), the users of that
-- segment with any watch time that day, their total watch time, and its
-- average per active user. A user is counted in the segment of their current
-- record in core.users (last delivery wins); a user with no record, or with
-- no value for the attribute, is in the segment 'Unknown'.
--
-- {attribute} is one of age_band, gender, region (the caller picks it from
-- that fixed list); {from} and {to} (YYYY-MM-DD, inclusive) are substituted
-- after validation. Totals are summed in whole microseconds, as in
-- user_average.sql, so that they do not depend on the order of addition.
SELECT v.view_date,
       COALESCE(NULLIF(u.{attribute}, ''), 'Unknown') AS segment,
       COUNT(*) AS active_users,
       CAST(SUM(CAST(ROUND(v.watch_seconds * 1000000) AS BIGINT)) AS DOUBLE PRECISION) / 1000000 AS watch_seconds,
       CAST(SUM(CAST(ROUND(v.watch_seconds * 1000000) AS BIGINT)) AS DOUBLE PRECISION) / 1000000 / COUNT(*)
           AS avg_watch_seconds_per_user
FROM analytics.daily_user_viewing v
LEFT JOIN core.users u ON u.user_id = v.user_id
WHERE v.view_date BETWEEN CAST('{from}' AS DATE) AND CAST('{to}' AS DATE)
GROUP BY v.view_date, COALESCE(NULLIF(u.{attribute}, ''), 'Unknown')
ORDER BY v.view_date, segment;
