-- Rebuilds the analytics of the days in core.analytics_pending, which the
-- viewing-session loads that committed before it left there, and takes them
-- off the list. The loader runs it as its own transaction after each load
-- (and a failed one again after the next): the rebuild reads only core, so a
-- day rebuilt twice comes out the same. The last statement returns the
-- number of days rebuilt.

-- The entries this rebuild takes: one a concurrent load adds after this
-- point stays for the rebuild that follows that load.
DROP TABLE IF EXISTS pending_taken;
CREATE TEMP TABLE pending_taken AS
SELECT view_date, load_id FROM core.analytics_pending;

DROP TABLE IF EXISTS touched_days;
CREATE TEMP TABLE touched_days AS
SELECT DISTINCT view_date FROM pending_taken;

-- @include analytics_days.sql

DELETE FROM core.analytics_pending
USING pending_taken
WHERE core.analytics_pending.view_date = pending_taken.view_date
  AND core.analytics_pending.load_id = pending_taken.load_id;

DROP TABLE pending_taken;

SELECT COUNT(*) AS days_rebuilt FROM touched_days;
