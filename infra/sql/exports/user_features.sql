-- Per-user features over the UTC days {from} to {to} (inclusive), for
-- models such as churn or recommendation: one row per user with any watch
-- time in those days. {from} and {to} (YYYY-MM-DD) are substituted by the
-- caller after validation. Locally this query is written to Parquet or CSV
-- with DuckDB's COPY; on Redshift, wrap it in UNLOAD … FORMAT AS PARQUET.
--
-- Two kinds of column, each exact in its own terms:
-- - from analytics.daily_user_viewing, the contract's day-split watch time:
--   active_days, watch_seconds (the seconds that fall in the days, summed
--   in whole microseconds as in the reports), their average per active day,
--   the average number of channels watched on an active day, and the first
--   and last active day;
-- - from core.viewing_sessions, the sessions that start in the days:
--   sessions_started, and the channel and the platform with the most of
--   their seconds (ties by id, then by name; a session without a platform
--   does not rank). The seconds are summed in whole microseconds, so that
--   two equal totals tie: as doubles, 0.1 s + 0.2 s would beat 0.3 s. A user whose only viewing in the days began the day
--   before has none of these (0 and NULL).
-- The demographics are the user's latest record in core.users.
WITH sessions_in_days AS (
    SELECT user_id, channel_id, platform, DATEDIFF('microsecond', start_time, end_time) AS watch_us
    FROM core.viewing_sessions
    WHERE event_date BETWEEN CAST('{from}' AS DATE) AND CAST('{to}' AS DATE)
)
SELECT d.user_id,
       d.active_days,
       CAST(d.watch_us AS DOUBLE PRECISION) / 1000000 AS watch_seconds,
       CAST(d.watch_us AS DOUBLE PRECISION) / 1000000 / d.active_days AS avg_watch_seconds_per_active_day,
       CAST(d.channel_days AS DOUBLE PRECISION) / d.active_days AS avg_channels_per_active_day,
       d.first_view_date,
       d.last_view_date,
       COALESCE(s.sessions_started, 0) AS sessions_started,
       c.channel_id AS top_channel_id,
       p.platform AS top_platform,
       u.age_band,
       u.gender,
       u.region
FROM (
    SELECT user_id,
           COUNT(*) AS active_days,
           SUM(CAST(ROUND(watch_seconds * 1000000) AS BIGINT)) AS watch_us,
           SUM(channels) AS channel_days,
           MIN(view_date) AS first_view_date,
           MAX(view_date) AS last_view_date
    FROM analytics.daily_user_viewing
    WHERE view_date BETWEEN CAST('{from}' AS DATE) AND CAST('{to}' AS DATE)
    GROUP BY user_id
) d
LEFT JOIN (
    SELECT user_id, COUNT(*) AS sessions_started
    FROM sessions_in_days
    GROUP BY user_id
) s ON s.user_id = d.user_id
LEFT JOIN (
    SELECT user_id, channel_id,
           ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY watch_us DESC, channel_id ASC) AS channel_rank
    FROM (
        SELECT user_id, channel_id, SUM(watch_us) AS watch_us
        FROM sessions_in_days
        GROUP BY user_id, channel_id
    ) per_channel
) c ON c.user_id = d.user_id AND c.channel_rank = 1
LEFT JOIN (
    SELECT user_id, platform,
           ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY watch_us DESC, platform ASC) AS platform_rank
    FROM (
        SELECT user_id, platform, SUM(watch_us) AS watch_us
        FROM sessions_in_days
        WHERE platform IS NOT NULL
        GROUP BY user_id, platform
    ) per_platform
) p ON p.user_id = d.user_id AND p.platform_rank = 1
LEFT JOIN core.users u ON u.user_id = d.user_id
ORDER BY d.user_id;
