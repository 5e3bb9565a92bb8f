-- Top channels on one UTC day by watch time; ties by channel id.
-- {date} (YYYY-MM-DD) and {limit} are substituted by the caller after validation.
SELECT v.channel_id,
       COALESCE(c.channel_name, 'Unknown') AS channel_name,
       v.watch_seconds,
       v.reach
FROM analytics.daily_channel_viewing v
LEFT JOIN core.channels c ON c.channel_id = v.channel_id
WHERE v.view_date = CAST('{date}' AS DATE)
ORDER BY v.watch_seconds DESC, v.channel_id ASC
LIMIT {limit};
