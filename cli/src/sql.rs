//! `tvetl sql`: one read-only query on the local warehouse, printed as a
//! table, JSON or CSV.
//!
//! The warehouse file is opened read-only and the connection confined to it
//! ([`DuckDbWarehouse::confine_to_reads`]), so exploring it cannot change
//! what the loads keep, nor write files or other databases; a query that
//! would write fails with DuckDB's own message. With `--out`, tvetl itself
//! writes the result to a file ([`write_sql`]).

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use tvetl_core::warehouse::{ResultSet, Warehouse, WarehouseError};

use crate::export::{FileFormat, outside_warehouse, partial_file};
use crate::report::{OutputFormat, csv_line, truncate};
use crate::warehouse::DuckDbWarehouse;

/// The widest a table column gets; longer values end in `…`.
const MAX_TABLE_WIDTH: usize = 40;

/// The query as given: `-` reads it from standard input.
fn query_text(query: &str) -> anyhow::Result<String> {
    let query = if query == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the query from standard input")?;
        text
    } else {
        query.to_owned()
    };
    anyhow::ensure!(!query.trim().is_empty(), "the query is empty");
    let statements = statement_count(&query);
    anyhow::ensure!(
        statements <= 1,
        "tvetl sql runs one query, and this text holds {statements} statements (separated by `;`): \
         DuckDB would run each in turn and show the last one's result alone"
    );
    Ok(query)
}

/// How many statements `query` holds: runs of tokens between `;`, comments
/// and whitespace aside. A text the tokenizer cannot read counts as one,
/// and DuckDB says what is wrong with it.
fn statement_count(query: &str) -> usize {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&sqlparser::dialect::DuckDbDialect {}, query).tokenize() else {
        return 1;
    };
    let mut statements = 0;
    let mut in_statement = false;
    for token in tokens {
        match token {
            Token::Whitespace(_) => {}
            Token::SemiColon => in_statement = false,
            _ if !in_statement => {
                statements += 1;
                in_statement = true;
            }
            _ => {}
        }
    }
    statements
}

/// Runs `query` (`-`: read from standard input) on `warehouse`, opened
/// read-only, and renders its result.
pub fn run_sql(warehouse: &mut DuckDbWarehouse, query: &str, format: OutputFormat) -> anyhow::Result<String> {
    let query = query_text(query)?;
    warehouse.confine_to_reads()?;
    let result = warehouse.query(&query).map_err(|e| {
        let read_only = e.to_string().contains("read-only mode");
        let e = anyhow::Error::from(e);
        // DuckDB names the refused statement's type as EXECUTE (a prepared
        // statement), so say what happened in plain words.
        if read_only {
            e.context("tvetl sql only reads: the warehouse is opened read-only (`tvetl run` loads it)")
        } else {
            e
        }
    })?;
    Ok(render_result(&result, format))
}

/// Writes the result of `query` (`-`: from standard input) to `out`, as
/// zstd Parquet or CSV by its extension, and says how many rows it wrote.
/// The query runs as confined as on screen; tvetl writes the file itself,
/// never inside the warehouse's own folder.
pub fn write_sql(
    warehouse: &mut DuckDbWarehouse,
    query: &str,
    out: &Path,
    warehouse_file: &Path,
) -> anyhow::Result<String> {
    let query = query_text(query)?;
    let Some(format) = FileFormat::of(out) else {
        anyhow::bail!("--out {}: the file's name must end in .parquet or .csv", out.display())
    };
    outside_warehouse(out, warehouse_file)?;
    warehouse.confine_to_reads()?;
    let mut file = partial_file(out, "export")?;
    let rows = if format == FileFormat::Parquet {
        let properties = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
        let handle = file.as_file().try_clone()?;
        let parquet_error = |e: parquet::errors::ParquetError| WarehouseError::Result(e.to_string());
        let (writer, rows) = warehouse.query_batches(
            &query,
            |schema| ArrowWriter::try_new(handle, schema, Some(properties)).map_err(parquet_error),
            |writer, batch| writer.write(batch).map_err(parquet_error),
        )?;
        writer.close()?;
        rows
    } else {
        let result = warehouse.query(&query)?;
        std::io::Write::write_all(file.as_file_mut(), render_result(&result, OutputFormat::Csv).as_bytes())?;
        result.rows.len() as u64
    };
    file.persist(out).with_context(|| format!("--out {}", out.display()))?;
    Ok(format!("wrote {rows} row{} to {}", if rows == 1 { "" } else { "s" }, out.display()))
}

/// A value as text: strings bare, NULL empty, numbers as Rust prints them
/// (`4200`, not `4200.0`, like the reports' CSV).
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Renders a query's result: JSON keeps the columns in order and rows as
/// arrays (two columns may share a name); a table right-aligns numbers.
pub fn render_result(result: &ResultSet, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string(result).expect("serializes"),
        OutputFormat::Csv => {
            let mut out = csv_line(&result.columns);
            for row in &result.rows {
                out.push_str(&csv_line(&row.iter().map(text).collect::<Vec<_>>()));
            }
            out
        }
        OutputFormat::Table => {
            let cells: Vec<Vec<String>> = result
                .rows
                .iter()
                .map(|row| row.iter().map(|v| truncate(&text(v), MAX_TABLE_WIDTH)).collect())
                .collect();
            let widths: Vec<usize> = result
                .columns
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let header = truncate(name, MAX_TABLE_WIDTH).chars().count();
                    cells.iter().map(|row| row[i].chars().count()).fold(header, usize::max)
                })
                .collect();
            let numeric: Vec<bool> = (0..result.columns.len())
                .map(|i| {
                    let mut values = result.rows.iter().map(|row| &row[i]).filter(|v| !v.is_null()).peekable();
                    values.peek().is_some() && values.all(Value::is_number)
                })
                .collect();
            let line = |fields: &[String]| {
                let padded: Vec<String> = fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let pad = " ".repeat(widths[i].saturating_sub(f.chars().count()));
                        if numeric[i] { format!("{pad}{f}") } else { format!("{f}{pad}") }
                    })
                    .collect();
                format!("{}\n", padded.join("  ").trim_end())
            };
            let header: Vec<String> = result.columns.iter().map(|c| truncate(c, MAX_TABLE_WIDTH)).collect();
            let mut out = line(&header);
            out.push_str(&line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>()));
            for row in &cells {
                out.push_str(&line(row));
            }
            let n = result.rows.len();
            out.push_str(&format!("({n} row{})\n", if n == 1 { "" } else { "s" }));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result() -> ResultSet {
        ResultSet {
            columns: vec!["channel_id".into(), "watch_seconds".into(), "name".into()],
            rows: vec![
                vec![json!("c1"), json!(4200.0), json!("One, \"the first\"")],
                vec![json!("c10"), json!(60.5), Value::Null],
            ],
        }
    }

    #[test]
    fn statements_are_counted_by_their_semicolons_outside_strings_and_comments() {
        assert_eq!(statement_count("SELECT 1"), 1);
        assert_eq!(statement_count("SELECT 1;\n  -- done\n"), 1);
        assert_eq!(statement_count("SELECT ';' AS s /* ; */ -- ;\n"), 1);
        assert_eq!(statement_count("SELECT 1; SELECT 2"), 2);
        assert_eq!(statement_count(";;SELECT 1;;PRAGMA database_list;"), 2);
        assert_eq!(statement_count("SELECT 'unterminated"), 1, "for DuckDB to refuse");
    }

    #[test]
    fn a_table_aligns_its_columns_and_right_aligns_numbers() {
        assert_eq!(
            render_result(&result(), OutputFormat::Table),
            "channel_id  watch_seconds  name\n\
             ----------  -------------  ----------------\n\
             c1                   4200  One, \"the first\"\n\
             c10                  60.5\n\
             (2 rows)\n"
        );
        let empty = ResultSet { columns: vec!["n".into()], rows: vec![] };
        assert_eq!(render_result(&empty, OutputFormat::Table), "n\n-\n(0 rows)\n");
    }

    #[test]
    fn csv_quotes_what_needs_it_and_json_keeps_the_column_order() {
        assert_eq!(
            render_result(&result(), OutputFormat::Csv),
            "channel_id,watch_seconds,name\nc1,4200,\"One, \"\"the first\"\"\"\nc10,60.5,\n"
        );
        let parsed: Value = serde_json::from_str(&render_result(&result(), OutputFormat::Json)).unwrap();
        assert_eq!(parsed["columns"], json!(["channel_id", "watch_seconds", "name"]));
        assert_eq!(parsed["rows"][1], json!(["c10", 60.5, null]));
    }

    #[test]
    fn long_values_are_cut_in_a_table_only() {
        let long = "x".repeat(100);
        let r = ResultSet { columns: vec!["v".into()], rows: vec![vec![json!(long.clone())]] };
        let table = render_result(&r, OutputFormat::Table);
        assert!(table.lines().nth(2).unwrap() == format!("{}…", "x".repeat(MAX_TABLE_WIDTH - 1)), "{table}");
        assert!(render_result(&r, OutputFormat::Csv).contains(&long));
    }
}
