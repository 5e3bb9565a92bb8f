-- Genres ranked by watch time on one UTC day: for each genre, the seconds
-- of its channels' sessions that fall in the day, the distinct users who
-- watched any of its channels that day (a user of two channels of a genre
-- counts once, so this is not a sum of the channels' reach), and how many of
-- its channels were watched. A channel without metadata, or without a genre,
-- is in the genre 'Unknown'; the genre is the channel's latest record in
-- core.channels. Ties by genre name. {date} (YYYY-MM-DD) and {limit} are
-- substituted by the caller after validation.
--
-- Computed from core at report time, not from the analytics tables: reach
-- per genre needs each user once per genre, and a channel's genre may change
-- after its days were rebuilt. Sessions last at most 24 hours, so those that
-- reach into the day start on it or on the day before.
SELECT COALESCE(NULLIF(c.genre, ''), 'Unknown') AS genre,
       CAST(SUM(p.watch_us) AS DOUBLE PRECISION) / 1000000 AS watch_seconds,
       COUNT(DISTINCT p.user_id) AS reach,
       COUNT(DISTINCT p.channel_id) AS channels
FROM (
    SELECT channel_id, user_id,
           DATEDIFF('microsecond',
                    GREATEST(start_time, CAST(CAST('{date}' AS DATE) AS TIMESTAMP)),
                    LEAST(end_time, CAST(CAST('{date}' AS DATE) + 1 AS TIMESTAMP))) AS watch_us
    FROM core.viewing_sessions
    WHERE event_date BETWEEN CAST('{date}' AS DATE) - 1 AND CAST('{date}' AS DATE)
      AND end_time > CAST(CAST('{date}' AS DATE) AS TIMESTAMP)
      AND start_time < CAST(CAST('{date}' AS DATE) + 1 AS TIMESTAMP)
) p
LEFT JOIN core.channels c ON c.channel_id = p.channel_id
GROUP BY COALESCE(NULLIF(c.genre, ''), 'Unknown')
ORDER BY watch_seconds DESC, genre ASC
LIMIT {limit};
