-- Loads what COPY put in staging.demographics into core.users (a dimension keyed by
-- user_id), last delivery wins. Run with COPY as one transaction; {load_id} is
-- substituted by the loader. The last statement returns the load's counts.

-- Counted over everything staged, before already-loaded files are skipped,
-- so a rerun over the same files reports the same duplicates (except rows
-- held back because core has a later upload's, counted when first loaded).
DROP TABLE IF EXISTS load_stats;
CREATE TEMP TABLE load_stats AS
SELECT COUNT(*) AS rows_staged, COUNT(DISTINCT user_id) AS keys_staged FROM staging.demographics;

DELETE FROM staging.demographics
USING core.load_ledger
WHERE core.load_ledger.table_name = 'users'
  AND core.load_ledger.source_key = staging.demographics.source_key
  AND core.load_ledger.source_version = staging.demographics.source_version;

-- Last delivery wins: the later object key (byte-wise), then the later
-- upload of that key (on AWS a load can take two versions of one raw file,
-- whose names start with their upload time: see load_viewing_sessions.sql),
-- then the later record.
DROP TABLE IF EXISTS new_rows;
CREATE TEMP TABLE new_rows AS
SELECT user_id, age_band, gender, region, source_key, source_version, source_record_no
FROM (
    SELECT s.*,
           ROW_NUMBER() OVER (
               PARTITION BY user_id
               ORDER BY source_key DESC, CASE WHEN source_version LIKE '________T______Z_%' THEN SUBSTRING(source_version, 1, 16) ELSE '' END DESC,
                        source_record_no DESC
           ) AS delivery_rank
    FROM staging.demographics s
) ranked
WHERE delivery_rank = 1;

-- Two uploads of one raw file on AWS can load in either order: a row core
-- holds from a later upload of the same file (by the upload times their
-- versions are named with, as ranked above) stays, and the earlier upload's
-- row counts as a duplicate (see load_viewing_sessions.sql: only a staged
-- version with an upload time is held back). Where no version has an
-- upload time (locally), the ledger says so, and core is not read.
DELETE FROM new_rows
USING core.users c
WHERE c.user_id = new_rows.user_id AND c.source_key = new_rows.source_key
  AND new_rows.source_version LIKE '________T______Z_%'
  AND CASE WHEN c.source_version LIKE '________T______Z_%' THEN SUBSTRING(c.source_version, 1, 16) ELSE '' END
      > SUBSTRING(new_rows.source_version, 1, 16)
  AND (SELECT COUNT(*) FROM core.load_ledger
       WHERE table_name = 'users' AND source_version LIKE '________T______Z_%') > 0;

DROP TABLE IF EXISTS load_counts;
CREATE TEMP TABLE load_counts AS
SELECT load_stats.rows_staged,
       load_stats.rows_staged - (SELECT COUNT(*) FROM staging.demographics) AS rows_already_loaded,
       load_stats.rows_staged - load_stats.keys_staged
           + (SELECT COUNT(DISTINCT user_id) FROM staging.demographics) - (SELECT COUNT(*) FROM new_rows) AS duplicates_removed,
       (SELECT COUNT(*) FROM new_rows) AS rows_merged,
       0 AS days_touched
FROM load_stats;

-- Replaced versions are deleted first, so the MERGE only inserts
-- (load_viewing_sessions.sql says why).
DELETE FROM core.users
USING new_rows
WHERE core.users.user_id = new_rows.user_id;

MERGE INTO core.users
USING new_rows n ON core.users.user_id = n.user_id
WHEN MATCHED THEN UPDATE SET
    age_band = n.age_band,
    gender = n.gender,
    region = n.region,
    source_key = n.source_key,
    source_version = n.source_version,
    source_record_no = n.source_record_no,
    load_id = {load_id}
WHEN NOT MATCHED THEN INSERT (user_id, age_band, gender, region, source_key, source_version, source_record_no, load_id)
VALUES (n.user_id, n.age_band, n.gender, n.region, n.source_key, n.source_version, n.source_record_no, {load_id});

INSERT INTO core.load_ledger (table_name, source_key, source_version, event_date, row_count, load_id)
SELECT 'users', source_key, source_version, CAST(NULL AS DATE), COUNT(*), {load_id}
FROM staging.demographics
GROUP BY source_key, source_version;

INSERT INTO core.load_audit (load_id, table_name, rows_staged, rows_already_loaded, duplicates_removed, rows_merged, days_touched)
SELECT {load_id}, 'users', rows_staged, rows_already_loaded, duplicates_removed, rows_merged, days_touched
FROM load_counts
WHERE rows_merged > 0;

DELETE FROM staging.demographics;
DROP TABLE new_rows;
DROP TABLE load_stats;

SELECT rows_staged, rows_already_loaded, duplicates_removed, rows_merged, days_touched FROM load_counts;
