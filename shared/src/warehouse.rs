//! The warehouse: the SQL of `infra/sql/` and the port that runs it.
//!
//! The same statements run on Amazon Redshift (through the Data API) and on
//! DuckDB (the local runner); only the step that fills the staging tables
//! differs (`COPY … FORMAT AS PARQUET` there, `read_parquet` here), and the
//! adapter supplies it.

use serde::Serialize;

use crate::source::Source;
use crate::timestamp::parse_day;

/// Creates the schemas and tables (idempotent).
pub const SCHEMA_SQL: &str = include_str!("../../infra/sql/schema.sql");
/// Staging → core for viewing sessions; the touched days go to
/// `core.analytics_pending`.
pub const LOAD_VIEWING_SESSIONS_SQL: &str = include_str!("../../infra/sql/load_viewing_sessions.sql");
/// Staging → core for channel metadata.
pub const LOAD_CHANNELS_SQL: &str = include_str!("../../infra/sql/load_channels.sql");
/// Staging → core for demographics.
pub const LOAD_DEMOGRAPHICS_SQL: &str = include_str!("../../infra/sql/load_demographics.sql");
/// Analytics of the days in the temp table `touched_days`, rebuilt from core;
/// `-- @include analytics_days.sql` lines stand for it.
pub const ANALYTICS_DAYS_SQL: &str = include_str!("../../infra/sql/analytics_days.sql");
/// Analytics rebuilt for a list of days, whatever loaded them.
pub const REBUILD_ANALYTICS_SQL: &str = include_str!("../../infra/sql/rebuild_analytics.sql");
/// Analytics rebuilt for the days committed loads left in
/// `core.analytics_pending`.
pub const ANALYTICS_PENDING_SQL: &str = include_str!("../../infra/sql/analytics_pending.sql");
/// Top channels on a day.
pub const TOP_CHANNELS_SQL: &str = include_str!("../../infra/sql/reports/top_channels.sql");
/// Average viewing per user per day.
pub const USER_AVERAGE_SQL: &str = include_str!("../../infra/sql/reports/user_average.sql");
/// Genres ranked by watch time on a day.
pub const TOP_GENRES_SQL: &str = include_str!("../../infra/sql/reports/top_genres.sql");
/// Viewing per audience segment (a demographic attribute) per day.
pub const AUDIENCE_SQL: &str = include_str!("../../infra/sql/reports/audience.sql");
/// Per-user features over a range of days, for models.
pub const USER_FEATURES_SQL: &str = include_str!("../../infra/sql/exports/user_features.sql");

/// A failure of the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// A statement failed; nothing of its transaction is kept.
    #[error("statement {index} failed: {message}\n  in: {}", abbreviate(statement))]
    Statement {
        /// The statement's place in its transaction, from 0.
        index: usize,
        /// The statement's text.
        statement: String,
        /// The engine's error.
        message: String,
    },
    /// A statement's transaction lost to a concurrent one (Redshift's
    /// serializable isolation, error 1023); nothing of it is kept, and
    /// running it again may succeed.
    #[error("statement {index} conflicted with a concurrent transaction: {message}\n  in: {}", abbreviate(statement))]
    Conflict {
        /// The statement's place in its transaction, from 0.
        index: usize,
        /// The statement's text.
        statement: String,
        /// The engine's error.
        message: String,
    },
    /// The warehouse could not be reached or timed out.
    #[error("warehouse unavailable: {message}")]
    Unavailable {
        /// The engine's or the service's error.
        message: String,
        /// Whether a retry may succeed (a throttle, a timeout, a busy cluster).
        retryable: bool,
    },
    /// A result did not have the expected shape.
    #[error("unexpected result: {0}")]
    Result(String),
}

/// The start of a long statement, enough to recognise it in a message.
fn abbreviate(statement: &str) -> String {
    const KEEP: usize = 400;
    match statement.char_indices().nth(KEEP) {
        Some((i, _)) => format!("{} …", &statement[..i]),
        None => statement.to_owned(),
    }
}

impl WarehouseError {
    /// True when a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, WarehouseError::Unavailable { retryable: true, .. } | WarehouseError::Conflict { .. })
    }

    /// The error of statement `index` of a transaction that the engine
    /// failed with `message`: a [`WarehouseError::Conflict`] when Redshift
    /// says a concurrent transaction won, else a
    /// [`WarehouseError::Statement`].
    pub fn failed_statement(index: usize, statement: String, message: String) -> Self {
        if message.contains("Serializable isolation violation") || message.contains("ERROR: 1023") {
            WarehouseError::Conflict { index, statement, message }
        } else {
            WarehouseError::Statement { index, statement, message }
        }
    }
}

/// Rows as JSON values, column names first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResultSet {
    /// The result's column names, in order.
    pub columns: Vec<String>,
    /// One value per column in each row; SQL NULL is JSON null.
    pub rows: Vec<Vec<serde_json::Value>>,
}

impl ResultSet {
    fn column(&self, name: &str) -> Result<usize, WarehouseError> {
        self.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .ok_or_else(|| WarehouseError::Result(format!("no column {name} in {:?}", self.columns)))
    }

    /// The integer in `column` of row `row`.
    pub fn int(&self, row: usize, column: &str) -> Result<i64, WarehouseError> {
        let c = self.column(column)?;
        let v = self.rows.get(row).and_then(|r| r.get(c));
        v.and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| WarehouseError::Result(format!("{column} of row {row} is not an integer: {v:?}")))
    }

    /// The number in `column` of row `row`.
    pub fn float(&self, row: usize, column: &str) -> Result<f64, WarehouseError> {
        let c = self.column(column)?;
        let v = self.rows.get(row).and_then(|r| r.get(c));
        v.and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| WarehouseError::Result(format!("{column} of row {row} is not a number: {v:?}")))
    }

    /// The text in `column` of row `row` (`None` for NULL).
    pub fn text(&self, row: usize, column: &str) -> Result<Option<String>, WarehouseError> {
        let c = self.column(column)?;
        match self.rows.get(row).and_then(|r| r.get(c)) {
            Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Ok(Some(other.to_string())),
            None => Err(WarehouseError::Result(format!("no row {row}"))),
        }
    }
}

/// A SQL engine holding the warehouse.
pub trait Warehouse {
    /// Runs `statements` as one transaction: all of them or none. Returns
    /// the rows of the last statement (empty if it returns none).
    fn execute_transaction(&mut self, statements: &[String]) -> Result<ResultSet, WarehouseError>;
    /// Runs one query.
    fn query(&mut self, sql: &str) -> Result<ResultSet, WarehouseError>;
}

/// Splits a SQL file into statements: they end with `;` at the end of a
/// line; `--` comment lines are dropped. (Our files keep `;` out of strings
/// and comments, which a test checks.)
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            statements.push(statement);
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_owned());
    }
    statements
}

/// The warehouse tables of each source.
pub fn staging_table(source: Source) -> &'static str {
    match source {
        Source::Viewership => "staging.viewing_sessions",
        Source::Channels => "staging.channels",
        Source::Demographics => "staging.demographics",
    }
}

/// The `table_name` of `source`'s loads in `core.load_ledger`.
pub fn ledger_table(source: Source) -> &'static str {
    match source {
        Source::Viewership => "viewing_sessions",
        Source::Channels => "channels",
        Source::Demographics => "users",
    }
}

/// A SQL file with its `-- @include analytics_days.sql` line replaced by
/// that file, so the loads and the rebuild share one text.
fn with_includes(sql: &str) -> String {
    sql.replace("-- @include analytics_days.sql\n", ANALYTICS_DAYS_SQL)
}

fn load_sql(source: Source) -> String {
    with_includes(match source {
        Source::Viewership => LOAD_VIEWING_SESSIONS_SQL,
        Source::Channels => LOAD_CHANNELS_SQL,
        Source::Demographics => LOAD_DEMOGRAPHICS_SQL,
    })
}

/// What a Redshift loader sends first in each transaction that writes the
/// warehouse (a load, a rebuild of analytics).
///
/// Redshift runs transactions under serializable isolation. Two loads that
/// both read the ledger and core and then write them abort one of the two
/// (error 1023) once both have taken their snapshot. Locking one table that
/// every such transaction writes or guards, before anything else, makes
/// concurrent loads (S3 events, the state machines, a backfill's many files)
/// wait their turn instead. The local warehouse runs one load at a time and
/// DuckDB has no `LOCK`, so it is not part of the shared SQL files.
pub const LOAD_LOCK_SQL: &str = "LOCK core.load_ledger";

/// The most statements Redshift's Data API runs in one batch
/// (`BatchExecuteStatement`), which is how a Redshift loader runs a
/// transaction: a load is the lock, its `COPY` and the load's SQL.
pub const MAX_BATCH_STATEMENTS: usize = 40;

/// `statements` as one transaction that waits for the others to end first
/// ([`LOAD_LOCK_SQL`]).
pub fn locked(statements: Vec<String>) -> Vec<String> {
    std::iter::once(LOAD_LOCK_SQL.to_owned()).chain(statements).collect()
}

/// The statements that rebuild analytics for the UTC days `first..=last`
/// (day numbers since 1970-01-01); the last returns `days_rebuilt`.
pub fn rebuild_analytics_statements(first: i32, last: i32) -> Vec<String> {
    let days: Vec<String> =
        (first..=last.max(first)).map(|d| format!("('{}')", crate::timestamp::format_day(d))).collect();
    split_statements(&with_includes(REBUILD_ANALYTICS_SQL).replace("{days}", &days.join(", ")))
}

/// The statements that rebuild the analytics of the days in
/// `core.analytics_pending` and take them off; the last returns
/// `days_rebuilt`. A loader runs them as their own transaction after its
/// loads have committed (see [`load_statements`]).
pub fn pending_analytics_statements() -> Vec<String> {
    split_statements(&with_includes(ANALYTICS_PENDING_SQL))
}

/// Rebuilds the analytics of the pending days ([`pending_analytics_statements`])
/// as one transaction on `wh`, after a loader's loads have committed, with
/// `first` before them (a Redshift loader's [`LOAD_LOCK_SQL`]); returns the
/// number of days rebuilt.
pub fn rebuild_pending_analytics(wh: &mut dyn Warehouse, first: &[&str]) -> Result<u64, WarehouseError> {
    let statements: Vec<String> = first.iter().map(|s| (*s).to_owned()).chain(pending_analytics_statements()).collect();
    let result = wh.execute_transaction(&statements)?;
    Ok(result.int(0, "days_rebuilt")? as u64)
}

/// The statements of one load of `source`: the engine's `copy` statements
/// (which fill the staging table), then staging → core. A viewing-session
/// load records the days it touched in `core.analytics_pending`, whose
/// analytics [`pending_analytics_statements`] rebuilds once it committed.
pub fn load_statements(source: Source, copy: Vec<String>, load_id: i64) -> Vec<String> {
    let mut statements = copy;
    statements.extend(split_statements(&load_sql(source).replace("{load_id}", &load_id.to_string())));
    statements
}

/// The schema statements.
pub fn schema_statements() -> Vec<String> {
    split_statements(SCHEMA_SQL)
}

/// What one load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoadStats {
    /// Rows the copy step staged.
    pub rows_staged: u64,
    /// Of those, rows of files loaded before (skipped).
    pub rows_already_loaded: u64,
    /// Staged rows superseded by a later delivery of the same key in this
    /// load (counted before files loaded earlier are skipped, so a rerun over
    /// the same files reports the same number), and rows held back because
    /// an earlier load took a later record of the same delivery (its other
    /// day file) or, on AWS, a later upload of the same raw file (counted
    /// when first loaded).
    pub duplicates_removed: u64,
    /// Rows inserted or updated in core.
    pub rows_merged: u64,
    /// Days whose analytics the load changed (rebuilt after it, by
    /// [`pending_analytics_statements`]).
    pub days_touched: u64,
}

impl LoadStats {
    /// Reads the counts the load's last statement returns.
    pub fn from_result(result: &ResultSet) -> Result<LoadStats, WarehouseError> {
        let get = |c| result.int(0, c).map(|v| v as u64);
        Ok(LoadStats {
            rows_staged: get("rows_staged")?,
            rows_already_loaded: get("rows_already_loaded")?,
            duplicates_removed: get("duplicates_removed")?,
            rows_merged: get("rows_merged")?,
            days_touched: get("days_touched")?,
        })
    }
}

/// A caller's parameter that is not what a report needs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReportParamError(String);

fn checked_day(text: &str) -> Result<&str, ReportParamError> {
    parse_day(text).map(|_| text).ok_or_else(|| ReportParamError(format!("not a date (YYYY-MM-DD): {text:?}")))
}

/// The top-channels query for `date` (validated, so it is safe to inline).
pub fn top_channels_sql(date: &str, limit: u32) -> Result<String, ReportParamError> {
    Ok(TOP_CHANNELS_SQL.replace("{date}", checked_day(date)?).replace("{limit}", &limit.to_string()))
}

/// The days `[from, to]`, validated, open ends meaning all days.
fn day_range<'a>(from: Option<&'a str>, to: Option<&'a str>) -> Result<(&'a str, &'a str), ReportParamError> {
    let from = from.map(checked_day).transpose()?.unwrap_or("0001-01-01");
    let to = to.map(checked_day).transpose()?.unwrap_or("9999-12-31");
    // Same-format dates compare as text; an empty range is a mistake to say,
    // not an empty report.
    if from > to {
        return Err(ReportParamError(format!("the range is empty: from {from} is after to {to}")));
    }
    Ok((from, to))
}

/// The top-genres query for `date` (validated, so it is safe to inline).
pub fn top_genres_sql(date: &str, limit: u32) -> Result<String, ReportParamError> {
    Ok(TOP_GENRES_SQL.replace("{date}", checked_day(date)?).replace("{limit}", &limit.to_string()))
}

/// The user-average query over `[from, to]`, open ends meaning all days.
pub fn user_average_sql(from: Option<&str>, to: Option<&str>) -> Result<String, ReportParamError> {
    let (from, to) = day_range(from, to)?;
    Ok(USER_AVERAGE_SQL.replace("{from}", from).replace("{to}", to))
}

/// The user-features query over `[from, to]`, open ends meaning all days:
/// one statement, without comments or the closing `;`, so that an engine's
/// export statement (DuckDB's `COPY (…) TO`, Redshift's `UNLOAD`) can wrap it.
pub fn user_features_sql(from: Option<&str>, to: Option<&str>) -> Result<String, ReportParamError> {
    let (from, to) = day_range(from, to)?;
    let sql = USER_FEATURES_SQL.replace("{from}", from).replace("{to}", to);
    Ok(split_statements(&sql).remove(0))
}

/// A demographic attribute of `core.users` that the audience report
/// segments viewers by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Demographic {
    /// `age_band`, e.g. `18-24`.
    AgeBand,
    /// `gender`.
    Gender,
    /// `region`.
    Region,
}

impl Demographic {
    /// Every attribute, in the order the contract lists them.
    pub const ALL: [Demographic; 3] = [Demographic::AgeBand, Demographic::Gender, Demographic::Region];

    /// The attribute's column in `core.users` (and its name in the contract).
    pub fn column(self) -> &'static str {
        match self {
            Demographic::AgeBand => "age_band",
            Demographic::Gender => "gender",
            Demographic::Region => "region",
        }
    }
}

/// The audience query over `[from, to]` segmented by `by`. The column name
/// comes from [`Demographic::column`], never from the caller's text.
pub fn audience_sql(by: Demographic, from: Option<&str>, to: Option<&str>) -> Result<String, ReportParamError> {
    let (from, to) = day_range(from, to)?;
    Ok(AUDIENCE_SQL.replace("{attribute}", by.column()).replace("{from}", from).replace("{to}", to))
}

/// One row of the top-channels report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelRank {
    /// 1 for the most watched; ties are ranked by `channel_id`.
    pub rank: u32,
    /// The channel as the sessions name it.
    pub channel_id: String,
    /// Its latest metadata's name, or `Unknown` for a channel without metadata.
    pub channel_name: String,
    /// The seconds of its sessions that fall in the day (midnight-crossing
    /// sessions split at UTC midnight).
    pub watch_seconds: f64,
    /// Distinct users with any watch seconds on it that day.
    pub reach: u64,
}

/// Runs the top-channels report.
pub fn top_channels(
    wh: &mut dyn Warehouse,
    date: &str,
    limit: u32,
) -> Result<Vec<ChannelRank>, Box<dyn std::error::Error + Send + Sync>> {
    let result = wh.query(&top_channels_sql(date, limit)?)?;
    let mut ranks = Vec::with_capacity(result.rows.len());
    for i in 0..result.rows.len() {
        ranks.push(ChannelRank {
            rank: i as u32 + 1,
            channel_id: result.text(i, "channel_id")?.unwrap_or_default(),
            channel_name: result.text(i, "channel_name")?.unwrap_or_default(),
            watch_seconds: result.float(i, "watch_seconds")?,
            reach: result.int(i, "reach")? as u64,
        });
    }
    Ok(ranks)
}

/// One row of the top-genres report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenreRank {
    /// 1 for the most watched; ties are ranked by genre.
    pub rank: u32,
    /// The channels' genre, or `Unknown` for channels without one.
    pub genre: String,
    /// The seconds of its channels' sessions that fall in the day.
    pub watch_seconds: f64,
    /// Distinct users who watched any channel of the genre that day.
    pub reach: u64,
    /// Channels of the genre watched that day.
    pub channels: u64,
}

/// Runs the top-genres report.
pub fn top_genres(
    wh: &mut dyn Warehouse,
    date: &str,
    limit: u32,
) -> Result<Vec<GenreRank>, Box<dyn std::error::Error + Send + Sync>> {
    let result = wh.query(&top_genres_sql(date, limit)?)?;
    let mut ranks = Vec::with_capacity(result.rows.len());
    for i in 0..result.rows.len() {
        ranks.push(GenreRank {
            rank: i as u32 + 1,
            genre: result.text(i, "genre")?.unwrap_or_default(),
            watch_seconds: result.float(i, "watch_seconds")?,
            reach: result.int(i, "reach")? as u64,
            channels: result.int(i, "channels")? as u64,
        });
    }
    Ok(ranks)
}

/// One row of the user-average report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyUserAverage {
    /// The UTC day, `YYYY-MM-DD`.
    pub date: String,
    /// Distinct users with any watch seconds that day.
    pub active_users: u64,
    /// The day's total watch seconds over `active_users`.
    pub avg_watch_seconds_per_user: f64,
}

/// Runs the user-average report.
pub fn user_average(
    wh: &mut dyn Warehouse,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<DailyUserAverage>, Box<dyn std::error::Error + Send + Sync>> {
    let result = wh.query(&user_average_sql(from, to)?)?;
    let mut days = Vec::with_capacity(result.rows.len());
    for i in 0..result.rows.len() {
        days.push(DailyUserAverage {
            date: result.text(i, "view_date")?.unwrap_or_default(),
            active_users: result.int(i, "active_users")? as u64,
            avg_watch_seconds_per_user: result.float(i, "avg_watch_seconds_per_user")?,
        });
    }
    Ok(days)
}

/// One audience segment's viewing on one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentViewing {
    /// The attribute's value, or `Unknown` for users without one.
    pub segment: String,
    /// Distinct users of the segment with any watch seconds that day.
    pub active_users: u64,
    /// Their watch seconds that day.
    pub watch_seconds: f64,
    /// `watch_seconds` over `active_users`.
    pub avg_watch_seconds_per_user: f64,
}

/// One day of the audience report: its segments, in byte order of their
/// names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyAudience {
    /// The UTC day, `YYYY-MM-DD`.
    pub date: String,
    /// The day's segments with viewing.
    pub segments: Vec<SegmentViewing>,
}

/// Runs the audience report: viewing per segment of `by`, per day.
pub fn audience(
    wh: &mut dyn Warehouse,
    by: Demographic,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<DailyAudience>, Box<dyn std::error::Error + Send + Sync>> {
    let result = wh.query(&audience_sql(by, from, to)?)?;
    let mut days: Vec<DailyAudience> = Vec::new();
    for i in 0..result.rows.len() {
        let date = result.text(i, "view_date")?.unwrap_or_default();
        let segment = SegmentViewing {
            segment: result.text(i, "segment")?.unwrap_or_default(),
            active_users: result.int(i, "active_users")? as u64,
            watch_seconds: result.float(i, "watch_seconds")?,
            avg_watch_seconds_per_user: result.float(i, "avg_watch_seconds_per_user")?,
        };
        // The rows come ordered by day, so a day's segments are adjacent.
        match days.last_mut() {
            Some(day) if day.date == date => day.segments.push(segment),
            _ => days.push(DailyAudience { date, segments: vec![segment] }),
        }
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::RedshiftSqlDialect;
    use sqlparser::parser::Parser;

    fn all_redshift_statements() -> Vec<(String, String)> {
        let mut all = Vec::new();
        for (name, sql) in [
            ("schema.sql", SCHEMA_SQL.to_owned()),
            ("load_viewing_sessions.sql", load_sql(Source::Viewership).replace("{load_id}", "7")),
            ("rebuild_analytics.sql", rebuild_analytics_statements(19_723, 19_725).join(";\n") + ";"),
            ("analytics_pending.sql", pending_analytics_statements().join(";\n") + ";"),
            ("load_channels.sql", LOAD_CHANNELS_SQL.replace("{load_id}", "7")),
            ("load_demographics.sql", LOAD_DEMOGRAPHICS_SQL.replace("{load_id}", "7")),
            ("top_channels.sql", top_channels_sql("2024-01-01", 10).unwrap()),
            ("top_genres.sql", top_genres_sql("2024-01-01", 10).unwrap()),
            ("user_average.sql", user_average_sql(None, Some("2024-01-07")).unwrap()),
            ("audience.sql by age_band", audience_sql(Demographic::AgeBand, Some("2024-01-01"), None).unwrap()),
            ("audience.sql by region", audience_sql(Demographic::Region, None, None).unwrap()),
            ("user_features.sql", user_features_sql(Some("2024-01-01"), Some("2024-01-07")).unwrap()),
            ("LOAD_LOCK_SQL", LOAD_LOCK_SQL.to_owned()),
        ] {
            for statement in split_statements(&sql) {
                all.push((name.to_owned(), statement));
            }
        }
        all
    }

    #[test]
    fn every_statement_parses_as_redshift_sql() {
        let statements = all_redshift_statements();
        assert!(statements.len() > 40, "found only {} statements", statements.len());
        for (file, statement) in statements {
            let parsed = Parser::parse_sql(&RedshiftSqlDialect {}, &statement)
                .unwrap_or_else(|e| panic!("{file}: {e}\n{statement}"));
            assert_eq!(parsed.len(), 1, "{file}: one statement per split\n{statement}");
        }
    }

    /// Redshift's MERGE is stricter than the parser: its source must be a
    /// table (not a subquery or view), and it takes exactly one `WHEN MATCHED`
    /// action (UPDATE or DELETE) and one `WHEN NOT MATCHED THEN INSERT`.
    #[test]
    fn every_merge_has_the_shape_redshift_accepts() {
        use sqlparser::ast::{MergeAction, MergeClauseKind, Statement, TableFactor};
        let mut merges = 0;
        for (file, statement) in all_redshift_statements() {
            let Statement::Merge(merge) = &Parser::parse_sql(&RedshiftSqlDialect {}, &statement).unwrap()[0] else {
                continue;
            };
            merges += 1;
            assert!(
                matches!(merge.source, TableFactor::Table { .. }),
                "{file}: the source is not a table\n{statement}"
            );
            let kinds: Vec<_> = merge.clauses.iter().map(|c| (c.clause_kind, c.predicate.is_some())).collect();
            assert_eq!(
                kinds,
                [(MergeClauseKind::Matched, false), (MergeClauseKind::NotMatched, false)],
                "{file}: {statement}"
            );
            assert!(matches!(merge.clauses[1].action, MergeAction::Insert(_)), "{file}: {statement}");
        }
        assert_eq!(merges, 3, "one MERGE per load");
    }

    #[test]
    fn no_placeholder_is_left_and_no_semicolon_hides_in_a_statement() {
        for (file, statement) in all_redshift_statements() {
            assert!(!statement.contains('{'), "{file}: unsubstituted placeholder in {statement}");
            assert!(!statement.contains(';'), "{file}: split missed a statement end in {statement}");
        }
    }

    #[test]
    fn a_lost_serialization_conflict_is_retryable_and_other_failures_are_not() {
        let conflict = WarehouseError::failed_statement(
            3,
            "DELETE FROM core.viewing_sessions USING staging.viewing_sessions …".into(),
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - 106518, transactions forming the cycle \
             are: 1106531, 1106539 (pid:12345)"
                .into(),
        );
        assert!(matches!(conflict, WarehouseError::Conflict { index: 3, .. }), "{conflict:?}");
        assert!(conflict.is_retryable());
        assert!(conflict.to_string().contains("conflicted with a concurrent transaction"), "{conflict}");

        let sql_error =
            WarehouseError::failed_statement(0, "SELECT nope".into(), "column \"nope\" does not exist".into());
        assert!(matches!(sql_error, WarehouseError::Statement { .. }));
        assert!(!sql_error.is_retryable());
    }

    #[test]
    fn every_transaction_a_redshift_loader_sends_fits_one_data_api_batch() {
        let copy = || vec!["COPY staging.x FROM 's3://lake/manifest' FORMAT AS PARQUET MANIFEST".to_owned()];
        let mut transactions: Vec<(String, Vec<String>)> = [Source::Viewership, Source::Channels, Source::Demographics]
            .into_iter()
            .map(|source| (format!("load of {source:?}"), locked(load_statements(source, copy(), 7))))
            .collect();
        transactions.push(("schema".into(), schema_statements()));
        transactions.push(("pending analytics".into(), locked(pending_analytics_statements())));
        transactions.push(("rebuild of a year".into(), locked(rebuild_analytics_statements(0, 366))));
        for (name, statements) in transactions {
            assert!(
                statements.len() <= MAX_BATCH_STATEMENTS,
                "the {name} is {} statements, more than one Data API batch runs",
                statements.len()
            );
        }
    }

    #[test]
    fn locked_transactions_start_with_the_lock() {
        let statements = locked(pending_analytics_statements());
        assert_eq!(statements[0], LOAD_LOCK_SQL);
        assert_eq!(statements[1..], pending_analytics_statements()[..]);
    }

    #[test]
    fn report_parameters_are_validated() {
        assert!(top_channels_sql("2024-01-01'; DROP TABLE x; --", 10).is_err());
        assert!(user_average_sql(Some("yesterday"), None).is_err());
        let reversed = user_average_sql(Some("2024-01-05"), Some("2024-01-02")).unwrap_err();
        assert!(reversed.to_string().contains("from 2024-01-05 is after to 2024-01-02"), "{reversed}");
        assert!(user_average_sql(Some("2024-01-02"), Some("2024-01-02")).is_ok(), "one day is a range");
        assert!(user_average_sql(Some("9999-12-31"), None).is_ok());
        assert!(top_channels_sql("2024-02-29", 3).unwrap().contains("'2024-02-29'"));
        assert!(top_genres_sql("2024-02-30", 3).is_err());
        assert!(audience_sql(Demographic::Gender, Some("2024-01-03"), Some("2024-01-02")).is_err());
        assert!(audience_sql(Demographic::Gender, Some("2024-01-02'--"), None).is_err());
        for by in Demographic::ALL {
            let sql = audience_sql(by, None, None).unwrap();
            assert!(sql.contains(&format!("u.{}", by.column())), "{sql}");
            assert!(!sql.contains("{attribute}"), "{sql}");
        }
    }

    #[test]
    fn both_rebuilds_share_the_analytics_statements_and_loads_leave_analytics_to_them() {
        let analytics = split_statements(ANALYTICS_DAYS_SQL);
        assert!(analytics.iter().any(|s| s.starts_with("INSERT INTO analytics.daily_channel_viewing")));
        let rebuild = rebuild_analytics_statements(19_723, 19_724);
        let pending = pending_analytics_statements();
        for statement in &analytics {
            assert!(rebuild.contains(statement), "the rebuild lacks {statement}");
            assert!(pending.contains(statement), "the pending rebuild lacks {statement}");
        }
        assert_eq!(pending.last().unwrap(), "SELECT COUNT(*) AS days_rebuilt FROM touched_days");
        for source in Source::ALL {
            let load = load_statements(source, vec![], 1);
            assert!(!load.iter().any(|s| s.contains("analytics.")), "{source}: a load writes analytics");
        }
        let sessions = load_statements(Source::Viewership, vec![], 1);
        assert!(sessions.iter().any(|s| s.starts_with("INSERT INTO core.analytics_pending")));
        assert_eq!(rebuild[2], "INSERT INTO touched_days (view_date) VALUES ('2024-01-01'), ('2024-01-02')");
        assert_eq!(rebuild.last().unwrap(), "SELECT COUNT(*) AS days_rebuilt FROM touched_days");
    }

    #[test]
    fn splitting_keeps_statements_whole() {
        let s = split_statements("-- c\nSELECT 1;\n\nSELECT\n  2;\nSELECT 3");
        assert_eq!(s, ["SELECT 1", "SELECT\n  2", "SELECT 3"]);
    }
}
