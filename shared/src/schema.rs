//! Staging table schemas: the Arrow schemas of the Parquet files, and the
//! same tables as catalog definitions.
//!
//! Column order matters: Redshift's `COPY … FORMAT AS PARQUET` maps columns by
//! position, so `infra/sql/` declares the staging tables in this order.

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::source::Source;

/// Lineage columns every staging table ends with: the raw object, its
/// version (ETag or content hash) and the record's number in it. The
/// warehouse orders deliveries and keeps its load ledger by them.
const LINEAGE: [&str; 3] = ["source_key", "source_version", "source_record_no"];

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn with_lineage(mut fields: Vec<Field>) -> SchemaRef {
    fields.push(Field::new(LINEAGE[0], DataType::Utf8, false));
    fields.push(Field::new(LINEAGE[1], DataType::Utf8, false));
    fields.push(Field::new(LINEAGE[2], DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

static VIEWERSHIP: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_lineage(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("device_id", DataType::Utf8, true),
        Field::new("channel_id", DataType::Utf8, false),
        Field::new("program_id", DataType::Utf8, true),
        Field::new("start_time", utc_micros(), false),
        Field::new("end_time", utc_micros(), false),
        Field::new("duration_seconds", DataType::Int64, true),
        Field::new("platform", DataType::Utf8, true),
    ])
});

fn all_text(names: &[&str], required: usize) -> SchemaRef {
    with_lineage(names.iter().enumerate().map(|(i, n)| Field::new(*n, DataType::Utf8, i >= required)).collect())
}

static CHANNELS: LazyLock<SchemaRef> = LazyLock::new(|| all_text(&crate::validate::CHANNEL_FIELDS, 2));
static DEMOGRAPHICS: LazyLock<SchemaRef> = LazyLock::new(|| all_text(&crate::validate::DEMOGRAPHIC_FIELDS, 1));

/// The staging schema of a source's table.
pub fn staging_schema(source: Source) -> SchemaRef {
    match source {
        Source::Viewership => VIEWERSHIP.clone(),
        Source::Channels => CHANNELS.clone(),
        Source::Demographics => DEMOGRAPHICS.clone(),
    }
}

/// The Hive partition column of a source's staging table, if partitioned.
pub fn partition_column(source: Source) -> Option<&'static str> {
    match source {
        Source::Viewership => Some("event_date"),
        Source::Channels | Source::Demographics => None,
    }
}

/// A table as the catalog (Glue, or the local file catalog) records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableDef {
    /// Table name, e.g. `viewership`.
    pub name: String,
    /// Prefix of the table's files in the lake, e.g. `staging/viewership/`.
    pub location: String,
    /// Data columns as (name, Hive type).
    pub columns: Vec<(String, String)>,
    /// Partition keys as (name, Hive type).
    pub partition_keys: Vec<(String, String)>,
    /// How the table's files are stored.
    #[serde(default)]
    pub format: TableFormat,
}

/// The storage format of a table's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableFormat {
    /// Parquet (the staging tables).
    #[default]
    Parquet,
    /// One JSON object per line (the quarantine tables).
    JsonLines,
}

/// The catalog definition of a source's quarantine table,
/// `quarantine_<source>`, partitioned by `ingest_date` (the day the raw
/// object landed, or the day a stream record arrived).
///
/// Each row is either a rejected record (`reason` set: the columns of
/// [`QuarantinedRecord`](crate::quarantine::QuarantinedRecord)) or an object
/// that could not be read at all (`error` set, with `source_version` and
/// `size`): both kinds of file sit in the same partition folders, one JSON
/// object per line, so that Athena or Redshift Spectrum query dead letters
/// like any other table.
pub fn quarantine_table_def(source: Source) -> TableDef {
    let columns = [
        ("source_key", "string"),
        ("record_no", "bigint"),
        ("line", "bigint"),
        ("reason", "string"),
        ("field", "string"),
        ("message", "string"),
        ("original", "string"),
        ("stream", "struct<kind:string,stream:string,shard:string,position:string>"),
        ("source_version", "string"),
        ("size", "bigint"),
        ("error", "string"),
    ];
    TableDef {
        name: format!("quarantine_{}", source.name()),
        location: format!("{}/", crate::staging::quarantine_root(source)),
        columns: columns.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect(),
        partition_keys: vec![("ingest_date".to_owned(), "date".to_owned())],
        format: TableFormat::JsonLines,
    }
}

/// The catalog definition of a source's staging table.
pub fn table_def(source: Source) -> TableDef {
    let columns = staging_schema(source)
        .fields()
        .iter()
        .map(|f| {
            let hive = match f.data_type() {
                DataType::Utf8 => "string",
                DataType::Int64 => "bigint",
                DataType::Timestamp(..) => "timestamp",
                other => unreachable!("staging schemas use no {other}"),
            };
            (f.name().clone(), hive.to_owned())
        })
        .collect();
    TableDef {
        name: source.name().to_owned(),
        location: format!("staging/{}/", source.name()),
        columns,
        partition_keys: partition_column(source).map(|c| (c.to_owned(), "date".to_owned())).into_iter().collect(),
        format: TableFormat::Parquet,
    }
}
