-- Loads what COPY put in staging.viewing_sessions into core, and records the
-- days the load touched in core.analytics_pending. The loader runs COPY and
-- this file as one transaction and substitutes {load_id} (an integer); the
-- last statement returns the load's counts. Then it runs
-- analytics_pending.sql, which rebuilds the analytics of those days.
--
-- The temporary tables are dropped at the end, and a failed load's go with
-- its rollback (in DuckDB as in Redshift, where each Data API batch is a
-- session of its own anyway), so most need no DROP … IF EXISTS first. Those
-- that do are the names that other statements on the same connection leave
-- behind: load_counts, which every load's last statement reads, and
-- touched_days and load_stats, which the analytics rebuilds and the
-- dimensions' loads use too.
-- Redshift's Data API runs at most 40 statements in a batch, and this file
-- is one with the lock and the COPY (a test counts them).

-- Event ids delivered more than once in this load. Duplicates are counted
-- over everything staged, before already-loaded files are skipped, so a rerun
-- over the same files reports the same number.
CREATE TEMP TABLE repeated_ids AS
SELECT event_id, COUNT(*) AS deliveries
FROM staging.viewing_sessions
GROUP BY event_id
HAVING COUNT(*) > 1;

DROP TABLE IF EXISTS load_stats;
CREATE TEMP TABLE load_stats AS
SELECT (SELECT COUNT(*) FROM staging.viewing_sessions) AS rows_staged,
       (SELECT COALESCE(SUM(deliveries - 1), 0) FROM repeated_ids) AS duplicates;

-- A staging file already loaded changes nothing: forget its rows.
DELETE FROM staging.viewing_sessions
USING core.load_ledger
WHERE core.load_ledger.table_name = 'viewing_sessions'
  AND core.load_ledger.source_key = staging.viewing_sessions.source_key
  AND core.load_ledger.source_version = staging.viewing_sessions.source_version
  AND core.load_ledger.event_date = CAST(staging.viewing_sessions.start_time AS DATE);

-- The files and days this load takes in (what is left staged).
INSERT INTO core.load_ledger (table_name, source_key, source_version, event_date, row_count, load_id)
SELECT 'viewing_sessions', source_key, source_version, CAST(start_time AS DATE), COUNT(*), {load_id}
FROM staging.viewing_sessions
GROUP BY source_key, source_version, CAST(start_time AS DATE);

-- Last delivery wins: the later object key (byte-wise), then the later
-- upload of that key, then the later record. A load can take two versions of
-- one raw object on AWS: a file uploaded again before the load of its first
-- upload ran. A raw object's version name starts with its upload time there
-- (<YYYYMMDDTHHMMSSZ>_<etag>@<S3 version id>), to the second; such names
-- have that shape (which LIKE's _ wildcards match), and only their times are
-- compared. A version of another shape ranks as uploaded before all of them:
-- on AWS it was named by an earlier release, or stored before the bucket kept
-- versions (the ETag alone). Uploads of one second, and versions of no upload
-- time, rank by record number, as before such names. A local run loads one
-- version of each file (a content hash). A stream key is one batch (named by
-- where it starts), and its versions are its files' sequence ranges
-- (~<first>-<last>): its records' numbers order them, across its files too.
-- Only repeated ids need ranking, and only by where each delivery came from:
-- the deliveries they supersede are deleted from staging, and the rest (most
-- rows) stay where they are. (source_key, source_version, source_record_no)
-- names one delivery: a record number is unique within an object version.
-- One delivery can still be staged twice, by two files holding the same rows
-- with the same lineage: a compacted file and members that a stopped
-- compaction has not removed yet, or a stream batch written again after its
-- first files were compacted. Such copies are ranked once, as the one
-- delivery they are (otherwise each would supersede the other, and deleting
-- by lineage would delete both).
CREATE TEMP TABLE ranked_deliveries AS
SELECT event_id, source_key, source_version, source_record_no, copies,
       ROW_NUMBER() OVER (
           PARTITION BY event_id
           ORDER BY source_key DESC,
                    CASE WHEN source_version LIKE '________T______Z_%' THEN SUBSTRING(source_version, 1, 16) ELSE '' END DESC,
                    source_record_no DESC
       ) AS delivery_rank
FROM (
    SELECT s.event_id, s.source_key, s.source_version, s.source_record_no, COUNT(*) AS copies
    FROM staging.viewing_sessions s
    JOIN repeated_ids r ON s.event_id = r.event_id
    GROUP BY s.event_id, s.source_key, s.source_version, s.source_record_no
) deliveries;

DELETE FROM staging.viewing_sessions
USING ranked_deliveries d
WHERE d.delivery_rank > 1
  AND staging.viewing_sessions.event_id = d.event_id
  AND staging.viewing_sessions.source_key = d.source_key
  AND staging.viewing_sessions.source_version = d.source_version
  AND staging.viewing_sessions.source_record_no = d.source_record_no;

-- A winning delivery staged more than once is kept once. Staged rows have no
-- id of their own, so one copy is set aside, all are deleted, and it is put
-- back. (Usually there is none, and these join staging with nothing.)
CREATE TEMP TABLE kept_copies AS
SELECT event_id, user_id, device_id, channel_id, program_id, start_time, end_time, duration_seconds,
       platform, source_key, source_version, source_record_no
FROM (
    SELECT s.event_id, s.user_id, s.device_id, s.channel_id, s.program_id, s.start_time, s.end_time,
           s.duration_seconds, s.platform, s.source_key, s.source_version, s.source_record_no,
           ROW_NUMBER() OVER (PARTITION BY s.event_id ORDER BY s.source_record_no) AS copy_no
    FROM staging.viewing_sessions s
    JOIN ranked_deliveries d
      ON s.event_id = d.event_id AND s.source_key = d.source_key
     AND s.source_version = d.source_version AND s.source_record_no = d.source_record_no
    WHERE d.delivery_rank = 1 AND d.copies > 1
) copied
WHERE copy_no = 1;

DELETE FROM staging.viewing_sessions
USING kept_copies k
WHERE staging.viewing_sessions.event_id = k.event_id;

INSERT INTO staging.viewing_sessions (
    event_id, user_id, device_id, channel_id, program_id, start_time, end_time, duration_seconds,
    platform, source_key, source_version, source_record_no
)
SELECT event_id, user_id, device_id, channel_id, program_id, start_time, end_time, duration_seconds,
       platform, source_key, source_version, source_record_no
FROM kept_copies;

-- A delivery's rows can reach the warehouse in several loads: a raw object
-- (or a stream batch) writes one staging file per day, and on AWS each
-- file's notification is queued on its own and the queue's batches commit
-- in any order. So a session core already holds from a later record of the
-- same delivery is not replaced by an earlier record loaded after it: within
-- a delivery the later record wins, as it does when the files load together.
-- A delivery is one version of a raw object (a source_key and
-- source_version), or one stream batch: a source_key whose versions start
-- with ~ (each of its files has its own, ~<first>-<last>, and retries of the
-- batch may add files; an object's version never starts with ~).
-- For the same reason two uploads of one raw file on AWS can load in either
-- order: a session core holds from a later upload of the same file (by the
-- upload times their versions are named with, as ranked above) is not
-- replaced by an earlier upload loaded after it, as the later upload wins
-- when both load together. Only a staged version with an upload time is
-- held back so: one without (locally a content hash; on AWS the ETag alone,
-- which is also what a bucket whose versioning was suspended names new
-- uploads, or a name from an earlier release) may be the later, and the one
-- loaded later wins, as do two uploads of one second.
-- A row from any other delivery still replaces core's (a later run wins).
-- Only a delivery of which an earlier load took other files, or whose key
-- an earlier load took a later upload of, can meet such rows. The ledger
-- names those (this load's files are in it now), so a load of new
-- deliveries reads neither staging nor core's ids here.
-- A row's delivery is its source_key with its version, or with ~ for all of
-- a stream key's versions.
-- The ledger has a row per file and day: each side is first reduced to its
-- deliveries, so that a file of many days is not joined day by day.
CREATE TEMP TABLE deliveries_core_may_supersede AS
WITH ledger AS (
    SELECT source_key, load_id,
           CASE WHEN source_version LIKE '~%' THEN '~' ELSE source_version END AS delivery
    FROM core.load_ledger
    WHERE table_name = 'viewing_sessions'
),
this_load AS (
    SELECT DISTINCT source_key, delivery FROM ledger WHERE load_id = {load_id}
),
earlier AS (
    SELECT DISTINCT l.source_key, l.delivery
    FROM ledger l
    JOIN (SELECT DISTINCT source_key FROM this_load) k ON k.source_key = l.source_key
    WHERE l.load_id <> {load_id}
)
SELECT DISTINCT t.source_key, t.delivery
FROM this_load t
JOIN earlier e ON e.source_key = t.source_key
WHERE e.delivery = t.delivery
   OR (t.delivery LIKE '________T______Z_%'
       AND CASE WHEN e.delivery LIKE '________T______Z_%' THEN SUBSTRING(e.delivery, 1, 16) ELSE '' END
           > SUBSTRING(t.delivery, 1, 16));

CREATE TEMP TABLE superseded_in_core AS
SELECT n.event_id
FROM staging.viewing_sessions n
JOIN deliveries_core_may_supersede d
  ON d.source_key = n.source_key
 AND d.delivery = CASE WHEN n.source_version LIKE '~%' THEN '~' ELSE n.source_version END
JOIN core.viewing_sessions c
  ON c.event_id = n.event_id AND c.source_key = n.source_key
WHERE ((d.delivery = CASE WHEN c.source_version LIKE '~%' THEN '~' ELSE c.source_version END
        AND c.source_record_no > n.source_record_no)
       OR (n.source_version LIKE '________T______Z_%'
           AND CASE WHEN c.source_version LIKE '________T______Z_%' THEN SUBSTRING(c.source_version, 1, 16) ELSE '' END
               > SUBSTRING(n.source_version, 1, 16)))
  AND (SELECT COUNT(*) FROM deliveries_core_may_supersede) > 0;

DELETE FROM staging.viewing_sessions
USING superseded_in_core s
WHERE staging.viewing_sessions.event_id = s.event_id;

-- Days whose analytics change: those of the new sessions (now all that is
-- staged) and of the versions they replace. Finding those versions reads
-- every event id in core, a cost that grows with the warehouse, so it is
-- done in one join that keeps each distinct pair of days, not one join per
-- day column. The DELETE below reads core's ids only if this found any.
CREATE TEMP TABLE replaced_days AS
SELECT DISTINCT c.event_date AS start_day, CAST(c.end_time AS DATE) AS end_day
FROM core.viewing_sessions c
JOIN staging.viewing_sessions n ON c.event_id = n.event_id;

DROP TABLE IF EXISTS touched_days;
CREATE TEMP TABLE touched_days AS
SELECT DISTINCT view_date FROM (
    SELECT CAST(start_time AS DATE) AS view_date FROM staging.viewing_sessions
    UNION ALL
    SELECT CAST(end_time AS DATE) FROM staging.viewing_sessions
    UNION ALL
    SELECT start_day FROM replaced_days
    UNION ALL
    SELECT end_day FROM replaced_days
) days;

DROP TABLE IF EXISTS load_counts;
CREATE TEMP TABLE load_counts AS
SELECT load_stats.rows_staged,
       load_stats.rows_staged - (SELECT COALESCE(SUM(row_count), 0) FROM core.load_ledger
                                 WHERE load_id = {load_id} AND table_name = 'viewing_sessions') AS rows_already_loaded,
       load_stats.duplicates + (SELECT COUNT(*) FROM superseded_in_core) AS duplicates_removed,
       (SELECT COUNT(*) FROM staging.viewing_sessions) AS rows_merged,
       (SELECT COUNT(*) FROM touched_days) AS days_touched
FROM load_stats;

-- The versions that the staged sessions replace are deleted first, so the
-- MERGE on the natural key finds nothing to update and only inserts. An
-- in-place update of every column is what DuckDB cannot spill: re-delivering
-- 0.94M of 4.8M loaded sessions through the MERGE's UPDATE (or its DELETE
-- action alongside the INSERT) ran out of memory under the local 320 MB
-- limit, where a DELETE, then a MERGE that only inserts, fits. Redshift
-- stores an update as a delete and an insert anyway. The MERGE keeps its
-- UPDATE action: Redshift's MERGE needs one, and with it the statement is a
-- complete last-delivery-wins upsert on its own.
--
-- When the staged sessions replace none (a day of new sessions), the
-- DELETE has nothing to do, but matching their ids against core's would
-- still read all of core's: the condition on replaced_days, which holds a
-- row whenever a version is replaced, lets the engine see that first.
-- (Keeping the replaced versions' ids in a table to delete by instead held
-- 0.94M rows through the MERGE of a large re-delivery, which then ran out
-- of memory on two threads where it had fitted.)
DELETE FROM core.viewing_sessions
USING staging.viewing_sessions
WHERE core.viewing_sessions.event_id = staging.viewing_sessions.event_id
  AND (SELECT COUNT(*) FROM replaced_days) > 0;

MERGE INTO core.viewing_sessions
USING staging.viewing_sessions n ON core.viewing_sessions.event_id = n.event_id
WHEN MATCHED THEN UPDATE SET
    user_id = n.user_id,
    device_id = n.device_id,
    channel_id = n.channel_id,
    program_id = n.program_id,
    start_time = n.start_time,
    end_time = n.end_time,
    event_date = CAST(n.start_time AS DATE),
    session_seconds = CAST(DATEDIFF('microsecond', n.start_time, n.end_time) AS DOUBLE PRECISION) / 1000000,
    duration_seconds = n.duration_seconds,
    platform = n.platform,
    source_key = n.source_key,
    source_version = n.source_version,
    source_record_no = n.source_record_no,
    load_id = {load_id}
WHEN NOT MATCHED THEN INSERT (
    event_id, user_id, device_id, channel_id, program_id, start_time, end_time, event_date,
    session_seconds, duration_seconds, platform, source_key, source_version, source_record_no, load_id
) VALUES (
    n.event_id, n.user_id, n.device_id, n.channel_id, n.program_id, n.start_time, n.end_time,
    CAST(n.start_time AS DATE),
    CAST(DATEDIFF('microsecond', n.start_time, n.end_time) AS DOUBLE PRECISION) / 1000000,
    n.duration_seconds, n.platform, n.source_key, n.source_version, n.source_record_no, {load_id}
);

-- The analytics of these days are rebuilt once this load has committed
-- (analytics_pending.sql), not here: until the commit, everything staged and
-- loaded stays in the transaction. Rebuilding 7 days of 9.8M sessions in the
-- same transaction ran out of memory under the local 320 MB limit; after the
-- commit it fits.
INSERT INTO core.analytics_pending (view_date, load_id)
SELECT view_date, {load_id} FROM touched_days;

INSERT INTO core.load_audit (load_id, table_name, rows_staged, rows_already_loaded, duplicates_removed, rows_merged, days_touched)
SELECT {load_id}, 'viewing_sessions', rows_staged, rows_already_loaded, duplicates_removed, rows_merged, days_touched
FROM load_counts
WHERE rows_merged > 0;

DELETE FROM staging.viewing_sessions;
DROP TABLE ranked_deliveries;
DROP TABLE kept_copies;
DROP TABLE deliveries_core_may_supersede;
DROP TABLE superseded_in_core;
DROP TABLE repeated_ids;
DROP TABLE replaced_days;
DROP TABLE touched_days;
DROP TABLE load_stats;

SELECT rows_staged, rows_already_loaded, duplicates_removed, rows_merged, days_touched FROM load_counts;
