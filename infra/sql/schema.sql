-- The TV viewership warehouse: staging, core and analytics layers.
-- Runs unchanged on Amazon Redshift and on DuckDB (the local runner).
-- Every statement is idempotent, so the loader runs this file before loads.

CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS analytics;

-- Staging: COPY targets. Columns follow the staging Parquet files in order,
-- because COPY … FORMAT AS PARQUET maps columns by position.
CREATE TABLE IF NOT EXISTS staging.viewing_sessions (
    event_id VARCHAR(256) NOT NULL,
    user_id VARCHAR(256) NOT NULL,
    device_id VARCHAR(256),
    channel_id VARCHAR(256) NOT NULL,
    program_id VARCHAR(256),
    start_time TIMESTAMP NOT NULL,
    end_time TIMESTAMP NOT NULL,
    duration_seconds BIGINT,
    platform VARCHAR(16),
    source_key VARCHAR(1024) NOT NULL,
    source_version VARCHAR(256) NOT NULL,
    source_record_no BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS staging.channels (
    channel_id VARCHAR(256) NOT NULL,
    channel_name VARCHAR(1024) NOT NULL,
    genre VARCHAR(256),
    network VARCHAR(256),
    language VARCHAR(64),
    source_key VARCHAR(1024) NOT NULL,
    source_version VARCHAR(256) NOT NULL,
    source_record_no BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS staging.demographics (
    user_id VARCHAR(256) NOT NULL,
    age_band VARCHAR(32),
    gender VARCHAR(32),
    region VARCHAR(256),
    source_key VARCHAR(1024) NOT NULL,
    source_version VARCHAR(256) NOT NULL,
    source_record_no BIGINT NOT NULL
);

-- Core: one row per natural key, the last delivery's values.
CREATE TABLE IF NOT EXISTS core.viewing_sessions (
    event_id VARCHAR(256) NOT NULL,
    user_id VARCHAR(256) NOT NULL,
    device_id VARCHAR(256),
    channel_id VARCHAR(256) NOT NULL,
    program_id VARCHAR(256),
    start_time TIMESTAMP NOT NULL,
    end_time TIMESTAMP NOT NULL,
    event_date DATE NOT NULL,
    session_seconds DOUBLE PRECISION NOT NULL,
    duration_seconds BIGINT,
    platform VARCHAR(16),
    source_key VARCHAR(1024) NOT NULL,
    source_version VARCHAR(256) NOT NULL,
    source_record_no BIGINT NOT NULL,
    load_id BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS core.channels (
    channel_id VARCHAR(256) NOT NULL,
    channel_name VARCHAR(1024) NOT NULL,
    genre VARCHAR(256),
    network VARCHAR(256),
    language VARCHAR(64),
    source_key VARCHAR(1024) NOT NULL,
    source_version VARCHAR(256) NOT NULL,
    source_record_no BIGINT NOT NULL,
    load_id BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS core.users (
    user_id VARCHAR(256) NOT NULL,
    age_band VARCHAR(32),
    gender VARCHAR(32),
    region VARCHAR(256),
    source_key VARCHAR(1024) NOT NULL,
    source_version VARCHAR(256) NOT NULL,
    source_record_no BIGINT NOT NULL,
    load_id BIGINT NOT NULL
);

-- Which staging files are loaded: one row per (raw object version, day) for
-- sessions and per raw object version for dimensions. A file whose rows are
-- in the ledger is skipped, so loading it twice changes nothing.
CREATE TABLE IF NOT EXISTS core.load_ledger (
    table_name VARCHAR(64) NOT NULL,
    source_key VARCHAR(1024) NOT NULL,
    source_version VARCHAR(256) NOT NULL,
    event_date DATE,
    row_count BIGINT NOT NULL,
    load_id BIGINT NOT NULL
);

-- What each load that changed something did.
CREATE TABLE IF NOT EXISTS core.load_audit (
    load_id BIGINT NOT NULL,
    table_name VARCHAR(64) NOT NULL,
    rows_staged BIGINT NOT NULL,
    rows_already_loaded BIGINT NOT NULL,
    duplicates_removed BIGINT NOT NULL,
    rows_merged BIGINT NOT NULL,
    days_touched BIGINT NOT NULL
);

-- Days whose analytics a committed load changed and no rebuild has caught
-- up with yet. A viewing-session load adds its days in its own transaction;
-- analytics_pending.sql, run after it in a transaction of its own, rebuilds
-- them and takes them off. A rebuild that fails leaves them here for the
-- next one, so no change to core stays out of analytics.
CREATE TABLE IF NOT EXISTS core.analytics_pending (
    view_date DATE NOT NULL,
    load_id BIGINT NOT NULL
);

-- Analytics: per UTC day, with sessions that cross midnight split exactly.
CREATE TABLE IF NOT EXISTS analytics.daily_channel_viewing (
    view_date DATE NOT NULL,
    channel_id VARCHAR(256) NOT NULL,
    watch_seconds DOUBLE PRECISION NOT NULL,
    reach BIGINT NOT NULL,
    sessions BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS analytics.daily_user_viewing (
    view_date DATE NOT NULL,
    user_id VARCHAR(256) NOT NULL,
    watch_seconds DOUBLE PRECISION NOT NULL,
    channels BIGINT NOT NULL,
    sessions BIGINT NOT NULL
);
