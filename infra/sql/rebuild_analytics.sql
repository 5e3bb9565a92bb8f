-- Rebuilds analytics for a list of days from core, whatever loaded them: the
-- daily schedule runs it over the last days so that late stream records and
-- corrections are reflected even where no load touched a day. The loader
-- substitutes {days} with the days as SQL values: ('2024-01-01'), ('2024-01-02').
-- The last statement returns the number of days rebuilt.

DROP TABLE IF EXISTS touched_days;
CREATE TEMP TABLE touched_days (view_date DATE);
INSERT INTO touched_days (view_date) VALUES {days};

-- @include analytics_days.sql

SELECT COUNT(*) AS days_rebuilt FROM touched_days;
