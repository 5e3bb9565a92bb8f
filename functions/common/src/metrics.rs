//! CloudWatch embedded metric format: one JSON line on stdout per run, which
//! CloudWatch Logs turns into metrics without an API call.

use serde_json::{Map, Value, json};

/// Prints the counts as an EMF line in namespace `tvetl`, dimension
/// `Function`.
pub fn emit(function: &str, counts: &[(&str, u64)]) {
    println!("{}", emf_line(function, counts, now_millis()));
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The EMF document (exposed for tests).
pub fn emf_line(function: &str, counts: &[(&str, u64)], timestamp_ms: u64) -> String {
    let mut doc = Map::new();
    let metrics: Vec<Value> = counts.iter().map(|(name, _)| json!({"Name": name, "Unit": "Count"})).collect();
    doc.insert(
        "_aws".into(),
        json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": [{"Namespace": "tvetl", "Dimensions": [["Function"]], "Metrics": metrics}]}),
    );
    doc.insert("Function".into(), json!(function));
    for (name, value) in counts {
        doc.insert((*name).into(), json!(value));
    }
    Value::Object(doc).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line_declares_every_metric_it_carries() {
        let line = super::emf_line("ingest-batch", &[("RowsRead", 10), ("RowsQuarantined", 2)], 1_700_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["RowsRead"], 10);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Metrics"][1]["Name"], "RowsQuarantined");
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(v["Function"], "ingest-batch");
    }
}
