//! The AWS batch path end to end, in process: raw files in the emulator's S3
//! → `ingest-batch` → `load-warehouse` through the Redshift Data API
//! stand-in (DuckDB behind the real SDK client) → analytics equal to
//! `tvetl report` on the same input.
//!
//! Run by `scripts/test.sh`, which starts the emulator and the stand-in and
//! exports `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_REDSHIFT_DATA` and
//! `TVETL_BIN`; ignored by a plain `cargo test`.

use std::path::Path;
use std::process::Command;

use aws_lambda_events::event::s3::S3Event;
use serde_json::Value;
use tokio::runtime::Handle;
use tvetl_core::aws::redshift::{RedshiftDataWarehouse, RedshiftTarget};
use tvetl_core::warehouse::{Demographic, Warehouse, audience, top_channels, user_average};
use tvetl_lambda::ingest::IngestBatch;
use tvetl_lambda::load::{LoadRequest, LoadWarehouse, RebuildDays};
use tvetl_lambda::stream::{IngestStream, StreamEvent};
use tvetl_lambda::{AwsClients, IngestConfig, LoadConfig, RetryBackoff};

fn tvetl(args: &[&str]) -> String {
    let bin = std::env::var("TVETL_BIN").expect("TVETL_BIN must name the tvetl binary (scripts/test.sh sets it)");
    let out = Command::new(bin).args(args).output().expect("tvetl runs");
    assert!(out.status.success(), "tvetl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn files_under(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    for top in ["viewership", "channels", "demographics"] {
        walk(&root.join(top), root, &mut out);
    }
    out.sort();
    out
}

fn s3_event(bucket: &str, keys: &[String]) -> S3Event {
    let records: Vec<Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": "2024-01-02T03:04:05.000Z", "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:EXAMPLE"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "EXAMPLE", "x-amz-id-2": "EXAMPLE"},
                "s3": {"s3SchemaVersion": "1.0", "configurationId": "raw",
                       "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                       "object": {"key": k, "size": 1, "eTag": "0", "sequencer": "0"}}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

/// Runs `f` with a connection to the Data API stand-in's warehouse, off the
/// async workers (the connection blocks on the runtime).
async fn on_standin<T: Send + 'static>(
    clients: &AwsClients,
    f: impl FnOnce(RedshiftDataWarehouse) -> T + Send + 'static,
) -> T {
    let (client, handle) = (clients.redshift_data.clone(), Handle::current());
    tokio::task::spawn_blocking(move || {
        f(RedshiftDataWarehouse::new(client, RedshiftTarget::Workgroup("tvetl-test".into()), "dev", None, handle))
    })
    .await
    .unwrap()
}

/// Both reports for every day, through the Data API.
async fn reports_via_data_api(clients: &AwsClients, days: Vec<String>) -> (Vec<Value>, Value) {
    on_standin(clients, move |mut wh| {
        let tops = days
            .iter()
            .map(|d| serde_json::json!({"date": d, "channels": top_channels(&mut wh, d, 1000).unwrap()}))
            .collect();
        let averages = serde_json::json!({"days": user_average(&mut wh, None, None).unwrap()});
        (tops, averages)
    })
    .await
}

/// The audience report by `by`, through the Data API, as `tvetl report
/// audience --format json` prints it.
async fn audience_via_data_api(clients: &AwsClients, by: Demographic) -> Value {
    on_standin(clients, move |mut wh| serde_json::json!({"by": by, "days": audience(&mut wh, by, None, None).unwrap()}))
        .await
}

/// Two audience reports agree: the same days and segments, with the same
/// counts and the same totals (to float precision).
fn assert_same_audience(got: &Value, want: &Value) {
    assert_eq!(got["by"], want["by"]);
    let (g, w) = (got["days"].as_array().unwrap(), want["days"].as_array().unwrap());
    assert_eq!(g.len(), w.len());
    for (a, b) in g.iter().zip(w) {
        assert_eq!(a["date"], b["date"]);
        let (x, y) = (a["segments"].as_array().unwrap(), b["segments"].as_array().unwrap());
        assert_eq!(x.len(), y.len(), "{}: {x:?} vs {y:?}", a["date"]);
        for (p, q) in x.iter().zip(y) {
            assert_eq!((&p["segment"], &p["active_users"]), (&q["segment"], &q["active_users"]));
            for field in ["watch_seconds", "avg_watch_seconds_per_user"] {
                let (m, n) = (p[field].as_f64().unwrap(), q[field].as_f64().unwrap());
                assert!((m - n).abs() <= 1e-6 * m.abs().max(1.0), "{field}: {m} vs {n}");
            }
        }
    }
}

/// load-warehouse's configuration for the stand-in's workgroup.
fn load_config(lake: &str, retry_backoff: RetryBackoff) -> LoadConfig {
    LoadConfig {
        lake_bucket: lake.to_owned(),
        workgroup: Some("tvetl-test".into()),
        cluster: None,
        database: "dev".into(),
        secret_arn: None,
        copy_role_arn: "arn:aws:iam::000000000000:role/tvetl-copy".into(),
        retry_backoff,
    }
}

async fn count_sessions(clients: &AwsClients) -> i64 {
    on_standin(clients, move |mut wh| {
        wh.query("SELECT COUNT(*) AS n FROM core.viewing_sessions").unwrap().int(0, "n").unwrap()
    })
    .await
}

fn assert_same_reports(got: &(Vec<Value>, Value), want: &(Vec<Value>, Value)) {
    assert_eq!(got.0.len(), want.0.len());
    for (g, w) in got.0.iter().zip(&want.0) {
        let (g, w) = (g["channels"].as_array().unwrap(), w["channels"].as_array().unwrap());
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            assert_eq!(a["channel_id"], b["channel_id"]);
            assert_eq!(a["channel_name"], b["channel_name"]);
            assert_eq!(a["reach"], b["reach"]);
            let (x, y) = (a["watch_seconds"].as_f64().unwrap(), b["watch_seconds"].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
    let (g, w) = (got.1["days"].as_array().unwrap(), want.1["days"].as_array().unwrap());
    assert_eq!(g.len(), w.len());
    for (a, b) in g.iter().zip(w) {
        assert_eq!(a["date"], b["date"]);
        assert_eq!(a["active_users"], b["active_users"]);
        let (x, y) =
            (a["avg_watch_seconds_per_user"].as_f64().unwrap(), b["avg_watch_seconds_per_user"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{x} vs {y}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the emulator and the Data API stand-in: run scripts/test.sh"]
async fn raw_files_reach_redshift_and_its_analytics_equal_the_local_reports() {
    std::env::var("AWS_ENDPOINT_URL_REDSHIFT_DATA")
        .expect("the Data API stand-in's endpoint (scripts/test.sh sets it)");
    let dir = tempfile::tempdir().unwrap();
    let (input, local_lake) = (dir.path().join("raw"), dir.path().join("lake"));
    let input_s = input.to_str().unwrap();
    tvetl(&["generate", "--out", input_s, "--rows", "4000", "--days", "3", "--seed", "5", "--dirty", "0.05"]);
    let keys = files_under(&input);

    let clients = AwsClients::load().await;
    let (raw, lake, database) = (unique("raw"), unique("lake"), unique("tvetl_db").replace('-', "_"));
    for bucket in [&raw, &lake] {
        clients.s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    for key in &keys {
        let body = std::fs::read(input.join(key)).unwrap();
        clients.s3.put_object().bucket(&raw).key(key).body(body.into()).send().await.unwrap();
    }

    let ingest = IngestBatch {
        clients: clients.clone(),
        config: IngestConfig {
            lake_bucket: lake.clone(),
            glue_database: database.clone(),
            part_size: 8 * 1024 * 1024,
            upload_memory: tvetl_core::aws::s3::DEFAULT_UPLOAD_MEMORY,
            restore_archived: None,
        },
    };
    let ingested = ingest.handle(&s3_event(&raw, &keys).into()).await.unwrap();
    let failed: Vec<_> = ingested.objects.iter().filter(|o| o.status != "loaded").map(|o| o.key.as_str()).collect();
    assert_eq!(failed, ["viewership/sessions-9999-truncated.csv.gz"]);
    let staged: Vec<String> = ingested.objects.iter().flat_map(|o| o.staged.clone()).collect();

    let load = LoadWarehouse::new(clients.clone(), load_config(&lake, RetryBackoff::DEFAULT));
    let request = LoadRequest::Keys { objects: staged.clone() };
    let loaded = load.handle(&request).await.expect("the load succeeds");
    let sessions = &loaded.loads[&tvetl_core::Source::Viewership];

    // The same input through the local runner.
    let summary: Value = serde_json::from_str(&tvetl(&[
        "run",
        "--input",
        input_s,
        "--lake",
        local_lake.to_str().unwrap(),
        "--format",
        "json",
        "--quiet",
    ]))
    .unwrap();
    assert_eq!(sessions.rows_staged, summary["rows_accepted"].as_u64().unwrap());
    assert_eq!(sessions.duplicates_removed, summary["duplicates_removed"].as_u64().unwrap());
    let days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"].map(String::from).to_vec();
    let lake_s = local_lake.to_str().unwrap();
    let local: (Vec<Value>, Value) = (
        days.iter()
            .map(|d| {
                serde_json::from_str(&tvetl(&[
                    "report",
                    "--lake",
                    lake_s,
                    "top-channels",
                    "--date",
                    d,
                    "--limit",
                    "1000",
                    "--format",
                    "json",
                ]))
                .unwrap()
            })
            .collect(),
        serde_json::from_str(&tvetl(&["report", "--lake", lake_s, "user-average", "--format", "json"])).unwrap(),
    );
    let remote = reports_via_data_api(&clients, days.clone()).await;
    assert!(!remote.0[0]["channels"].as_array().unwrap().is_empty());
    assert_same_reports(&remote, &local);
    for by in Demographic::ALL {
        let local: Value = serde_json::from_str(&tvetl(&[
            "report",
            "--lake",
            lake_s,
            "audience",
            "--by",
            by.column(),
            "--format",
            "json",
        ]))
        .unwrap();
        assert!(!local["days"].as_array().unwrap().is_empty());
        assert_same_audience(&audience_via_data_api(&clients, by).await, &local);
    }
    // The user features' query runs there too, and finds the same users.
    let exported = dir.path().join("features.csv");
    tvetl(&["export", "--lake", lake_s, "user-features", "--out", exported.to_str().unwrap()]);
    let local_users: Vec<String> = std::fs::read_to_string(&exported)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    let remote_users = on_standin(&clients, move |mut wh| {
        let result = wh.query(&tvetl_core::warehouse::user_features_sql(None, None).unwrap()).unwrap();
        (0..result.rows.len()).map(|i| result.text(i, "user_id").unwrap().unwrap()).collect::<Vec<_>>()
    })
    .await;
    assert!(!local_users.is_empty());
    assert_eq!(remote_users, local_users);
    // So does the top-genres report, with the same ranking on every day.
    for day in &days {
        let local: Value = serde_json::from_str(&tvetl(&[
            "report",
            "--lake",
            lake_s,
            "top-genres",
            "--date",
            day,
            "--limit",
            "1000",
            "--format",
            "json",
        ]))
        .unwrap();
        let date = day.clone();
        let remote = on_standin(&clients, move |mut wh| {
            serde_json::to_value(tvetl_core::warehouse::top_genres(&mut wh, &date, 1000).unwrap()).unwrap()
        })
        .await;
        let key = |g: &Value| (g["genre"].to_string(), g["reach"].to_string(), g["channels"].to_string());
        let local = local["genres"].as_array().unwrap();
        assert!(!local.is_empty(), "{day}");
        assert_eq!(
            remote.as_array().unwrap().iter().map(key).collect::<Vec<_>>(),
            local.iter().map(key).collect::<Vec<_>>()
        );
        for (r, l) in remote.as_array().unwrap().iter().zip(local) {
            let (x, y) = (r["watch_seconds"].as_f64().unwrap(), l["watch_seconds"].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{day}: {x} vs {y}");
        }
    }

    // The same files again: the ledger makes it a no-op.
    let before = count_sessions(&clients).await;
    let again = load.handle(&request).await.expect("a replayed load succeeds");
    assert_eq!(again.loads[&tvetl_core::Source::Viewership].rows_merged, 0);
    assert_eq!(again.loads[&tvetl_core::Source::Viewership].rows_already_loaded, sessions.rows_staged);
    assert_eq!(count_sessions(&clients).await, before);
    assert_same_reports(&reports_via_data_api(&clients, days.clone()).await, &local);

    // Every staging file under a prefix (the state machine's request): all
    // are in the ledger already, so nothing merges.
    let by_prefix = load
        .handle(&LoadRequest::Prefix { prefix: "staging/viewership/".into() })
        .await
        .expect("a prefix load succeeds");
    assert_eq!(by_prefix.loads[&tvetl_core::Source::Viewership].rows_merged, 0);
    assert_eq!(by_prefix.loads[&tvetl_core::Source::Viewership].rows_already_loaded, sessions.rows_staged);

    // Analytics that went missing are rebuilt from core for the days asked.
    on_standin(&clients, move |mut wh| {
        let wipe = ["DELETE FROM analytics.daily_channel_viewing", "DELETE FROM analytics.daily_user_viewing"];
        wh.execute_transaction(&wipe.map(String::from)).unwrap();
    })
    .await;
    assert!(reports_via_data_api(&clients, days.clone()).await.0[0]["channels"].as_array().unwrap().is_empty());
    let rebuild = RebuildDays { from: Some(days[0].clone()), to: Some(days[3].clone()), days_back: None };
    let rebuilt =
        load.handle(&LoadRequest::RebuildAnalytics { rebuild_analytics: rebuild }).await.expect("the rebuild succeeds");
    assert_eq!(rebuilt.analytics_days_rebuilt, Some(4));
    assert_same_reports(&reports_via_data_api(&clients, days.clone()).await, &local);

    // A load whose COPY fails (a staging file that is not Parquet, after a
    // good one) leaves nothing half-loaded.
    let corrupt = "staging/viewership/event_date=2024-01-01/part-0000000000000000.parquet";
    clients.s3.put_object().bucket(&lake).key(corrupt).body(b"not parquet".to_vec().into()).send().await.unwrap();
    let broken = LoadRequest::Keys { objects: vec![staged[0].clone(), corrupt.to_owned()] };
    let err = load.handle(&broken).await.expect_err("the COPY fails");
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("part-0000000000000000"), "{err}");
    assert_eq!(count_sessions(&clients).await, before);
    assert_same_reports(&reports_via_data_api(&clients, days).await, &local);

    // A file that is not there is refused before anything is sent.
    let missing = LoadRequest::Keys {
        objects: vec!["staging/viewership/event_date=2024-01-09/part-ffffffffffffffff.parquet".into()],
    };
    let err = load.handle(&missing).await.expect_err("a missing staging file");
    assert!(err.to_string().contains("does not exist"), "{err}");

    // Queued notifications (the lake queue's batches) may name files that a
    // compaction merged and removed since: those are skipped, and the rest
    // of the batch loads. A message that is not a notification is set aside.
    let gone = "staging/viewership/event_date=2024-01-09/part-eeeeeeeeeeeeeeee.parquet".to_owned();
    let present = staged.iter().find(|k| k.starts_with("staging/viewership/")).unwrap().clone();
    let messages: Vec<Value> = [
        serde_json::to_string(&s3_event(&lake, std::slice::from_ref(&gone))).unwrap(),
        serde_json::to_string(&s3_event(&lake, std::slice::from_ref(&present))).unwrap(),
        "not a notification".to_owned(),
    ]
    .iter()
    .enumerate()
    .map(|(i, body)| serde_json::json!({"messageId": format!("m{i}"), "eventSource": "aws:sqs", "body": body}))
    .collect();
    let queued: LoadRequest = serde_json::from_value(serde_json::json!({ "Records": messages })).unwrap();
    let loaded = load.handle(&queued).await.expect("a queued batch with a file gone still loads");
    assert_eq!(loaded.missing, [gone]);
    assert_eq!(loaded.ignored_messages.len(), 1, "{:?}", loaded.ignored_messages);
    let stats = &loaded.loads[&tvetl_core::Source::Viewership];
    assert_eq!((stats.rows_merged, stats.rows_already_loaded), (0, stats.rows_staged), "loaded before: {stats:?}");

    // Any statement failing mid-batch rolls back those before it.
    on_standin(&clients, move |mut wh| {
        let batch: Vec<String> = [
            "CREATE TABLE core.batch_probe AS SELECT 1 AS x",
            "INSERT INTO core.batch_probe VALUES (2)",
            "SELECT no_such_column FROM core.batch_probe",
        ]
        .map(String::from)
        .to_vec();
        match wh.execute_transaction(&batch) {
            Err(tvetl_core::warehouse::WarehouseError::Statement { index, message, .. }) => {
                assert_eq!(index, 2, "the third statement failed: {message}");
                assert!(message.contains("no_such_column"), "{message}");
            }
            other => panic!("expected a failed statement, got {other:?}"),
        }
        let left = wh
            .query("SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name = 'batch_probe'")
            .unwrap()
            .int(0, "n")
            .unwrap();
        assert_eq!(left, 0, "nothing of the failed batch remains");
    })
    .await;

    // The stream path's files load through the same function. Days far from
    // the generated ones, so the comparisons above are not disturbed.
    let stream = IngestStream {
        clients: clients.clone(),
        config: IngestConfig {
            lake_bucket: lake.clone(),
            glue_database: database,
            part_size: 8 * 1024 * 1024,
            upload_memory: tvetl_core::aws::s3::DEFAULT_UPLOAD_MEMORY,
            restore_archived: None,
        },
    };
    let on_time = [("st-1", "u1", "2030-01-01T10:00:00Z", 600), ("st-2", "u2", "2030-01-01T11:00:00Z", 1200)];
    let answer = stream.handle(kinesis_event(&on_time, 1)).await.expect("the stream batch is ingested");
    assert_eq!(answer, serde_json::json!({"batchItemFailures": []}));
    let day = |d: &str| LoadRequest::Prefix { prefix: format!("staging/viewership/event_date={d}/") };
    let loaded = load.handle(&day("2030-01-01")).await.expect("the stream's files load");
    assert_eq!(loaded.loads[&tvetl_core::Source::Viewership].rows_merged, 2);
    let top = reports_via_data_api(&clients, vec!["2030-01-01".into()]).await.0;
    assert_eq!(top[0]["channels"][0]["watch_seconds"], 1800.0, "{top:?}");

    // A late record (a box back online) lands in its own day; loading it
    // rebuilds that day's analytics, and the next batch's replay is a no-op.
    let late = [("st-0", "u3", "2029-12-31T23:50:00Z", 1200)];
    stream.handle(kinesis_event(&late, 3)).await.expect("the late record is ingested");
    let loaded = load.handle(&day("2029-12-31")).await.expect("the late record loads");
    assert_eq!(loaded.loads[&tvetl_core::Source::Viewership].rows_merged, 1);
    let days = vec!["2029-12-31".to_owned(), "2030-01-01".to_owned()];
    let top = reports_via_data_api(&clients, days).await.0;
    assert_eq!(top[0]["channels"][0]["watch_seconds"], 600.0, "ten minutes before midnight: {top:?}");
    assert_eq!(top[1]["channels"][0]["watch_seconds"], 2400.0, "ten minutes after it, added to 2030-01-01: {top:?}");
    let replay = stream.handle(kinesis_event(&late, 3)).await.unwrap();
    assert_eq!(replay, serde_json::json!({"batchItemFailures": []}));
    let again = load.handle(&day("2029-12-31")).await.unwrap();
    assert_eq!(again.loads[&tvetl_core::Source::Viewership].rows_merged, 0);

    // Two loads at once, as two staged files' notifications run them: each
    // under its own load id, so each counts only its own rows.
    let first = [("cc-1", "u1", "2031-05-01T10:00:00Z", 60), ("cc-2", "u2", "2031-05-01T11:00:00Z", 60)];
    let second = [("cc-3", "u3", "2031-05-02T10:00:00Z", 60)];
    stream.handle(kinesis_event(&first, 10)).await.expect("the first batch is ingested");
    stream.handle(kinesis_event(&second, 20)).await.expect("the second batch is ingested");
    let (day_a, day_b) = (day("2031-05-01"), day("2031-05-02"));
    let (a, b) = tokio::join!(load.handle(&day_a), load.handle(&day_b));
    let (a, b) = (a.expect("the first concurrent load"), b.expect("the second concurrent load"));
    for (loaded, rows) in [(&a, 2), (&b, 1)] {
        let stats = &loaded.loads[&tvetl_core::Source::Viewership];
        assert_eq!((stats.rows_staged, stats.rows_already_loaded, stats.rows_merged), (rows, 0, rows), "{stats:?}");
    }
    let ids = on_standin(&clients, move |mut wh| {
        wh.query(
            "SELECT COUNT(DISTINCT load_id) AS ids FROM core.viewing_sessions WHERE event_id IN ('cc-1', 'cc-2', 'cc-3')",
        )
        .unwrap()
        .int(0, "ids")
        .unwrap()
    })
    .await;
    assert_eq!(ids, 2, "one load id per load");

    a_load_that_loses_a_conflict_commits_nothing_and_its_retry_loads_once(&clients, &load, &stream, &lake).await;
    a_raw_file_put_back_to_earlier_content_on_a_versioned_bucket_wins_again(&clients, &ingest, &load).await;
    two_uploads_of_one_raw_file_in_one_load_the_later_wins(&clients, &ingest, &load).await;
}

/// A new bucket named after `name` that keeps object versions, as the
/// template's raw bucket does.
async fn versioned_bucket(clients: &AwsClients, name: &str) -> String {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let bucket = unique(name);
    clients.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let enabled = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    clients.s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(enabled).send().await.unwrap();
    bucket
}

/// Puts `body` at `bucket`/`key` and runs ingest-batch on the upload's
/// notification; returns how the object fared.
async fn upload_and_ingest(
    clients: &AwsClients,
    ingest: &IngestBatch,
    bucket: &str,
    key: &str,
    body: String,
) -> tvetl_lambda::ingest::ObjectOutcome {
    clients.s3.put_object().bucket(bucket).key(key).body(body.into_bytes().into()).send().await.unwrap();
    let mut ingested = ingest.handle(&s3_event(bucket, &[key.to_owned()]).into()).await.unwrap();
    ingested.objects.remove(0)
}

/// On a versioned raw bucket (the template's), every upload is a version of
/// its own: a file corrected and then put back to what it first held is
/// loaded again, and wins as a later delivery. Named by ETag alone, the
/// third upload would be the first again, which the ledger skips.
async fn a_raw_file_put_back_to_earlier_content_on_a_versioned_bucket_wins_again(
    clients: &AwsClients,
    ingest: &IngestBatch,
    load: &LoadWarehouse,
) {
    let raw = versioned_bucket(clients, "raw-versioned").await;

    let key = "viewership/put-back.csv".to_owned();
    let csv = |seconds: u32| {
        format!(
            "event_id,user_id,channel_id,start_time,duration_seconds\npb-1,u1,ch-pb,2033-03-01T10:00:00Z,{seconds}\n"
        )
    };
    let mut staged_by_upload: Vec<Vec<String>> = Vec::new();
    for (seconds, merged) in [(3600, 1), (600, 1), (3600, 1)] {
        let ingested = upload_and_ingest(clients, ingest, &raw, &key, csv(seconds)).await;
        assert_eq!(ingested.status, "loaded", "{ingested:?}");
        let staged = ingested.staged;
        let loaded = load.handle(&LoadRequest::Keys { objects: staged.clone() }).await.expect("the upload loads");
        let stats = &loaded.loads[&tvetl_core::Source::Viewership];
        assert_eq!((stats.rows_staged, stats.rows_already_loaded, stats.rows_merged), (1, 0, merged), "{stats:?}");
        let top = reports_via_data_api(clients, vec!["2033-03-01".into()]).await.0;
        assert_eq!(top[0]["channels"][0]["watch_seconds"], f64::from(seconds), "after the {seconds} s upload: {top:?}");
        staged_by_upload.push(staged);

        // A duplicated notification of the same upload changes nothing.
        let replay = ingest.handle(&s3_event(&raw, std::slice::from_ref(&key)).into()).await.unwrap();
        assert_eq!(replay.objects[0].staged, *staged_by_upload.last().unwrap(), "the same version's files again");
        let again = load.handle(&LoadRequest::Keys { objects: replay.objects[0].staged.clone() }).await.unwrap();
        assert_eq!(again.loads[&tvetl_core::Source::Viewership].rows_merged, 0);
    }
    assert_ne!(staged_by_upload[2], staged_by_upload[0], "the same bytes uploaded again are a version of their own");
    let versions = on_standin(clients, move |mut wh| {
        let sql = "SELECT COUNT(DISTINCT source_version) AS n FROM core.load_ledger WHERE source_key = 'viewership/put-back.csv'";
        wh.query(sql).unwrap().int(0, "n").unwrap()
    })
    .await;
    assert_eq!(versions, 3, "each upload is in the ledger under its own version");
}

/// A raw file uploaded again before the load of its first upload ran: one
/// load takes both versions, and the later upload wins, whatever its
/// records' numbers. Here the correction moves `tu-1` from the second line
/// to the first, so ranking by record number alone would keep the first
/// upload's 3,600 s; and the load is given the later upload's files first.
/// Then two uploads whose files load in separate loads, in reverse order.
async fn two_uploads_of_one_raw_file_in_one_load_the_later_wins(
    clients: &AwsClients,
    ingest: &IngestBatch,
    load: &LoadWarehouse,
) {
    let raw = versioned_bucket(clients, "raw-two-uploads").await;

    let key = "viewership/two-uploads.csv".to_owned();
    let header = "event_id,user_id,channel_id,start_time,duration_seconds\n";
    let first = format!("{header}tu-0,u0,ch-tu,2034-04-01T08:00:00Z,60\ntu-1,u1,ch-tu,2034-04-01T10:00:00Z,3600\n");
    let corrected = format!("{header}tu-1,u1,ch-tu,2034-04-01T10:00:00Z,600\n");
    let mut staged = Vec::new();
    let mut versions = Vec::new();
    for (i, body) in [first, corrected].into_iter().enumerate() {
        if i > 0 {
            // Version names sort by upload to the second.
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        let ingested = upload_and_ingest(clients, ingest, &raw, &key, body).await;
        assert_eq!(ingested.status, "loaded", "{ingested:?}");
        staged.push(ingested.staged);
        let head = clients.s3.head_object().bucket(&raw).key(&key).send().await.unwrap();
        versions.push(head.version_id().unwrap().to_owned());
    }
    assert_ne!(staged[0], staged[1], "each upload is a version with files of its own");
    let objects: Vec<String> = staged[1].iter().chain(&staged[0]).cloned().collect();
    let loaded = load.handle(&LoadRequest::Keys { objects }).await.expect("both uploads load at once");
    let stats = &loaded.loads[&tvetl_core::Source::Viewership];
    assert_eq!((stats.rows_staged, stats.duplicates_removed, stats.rows_merged), (3, 1, 2), "{stats:?}");
    // tu-0 is not in the correction: a row removed from a file stays.
    let top = reports_via_data_api(clients, vec!["2034-04-01".into()]).await.0;
    assert_eq!(top[0]["channels"][0]["watch_seconds"], 660.0, "tu-0's 60 s and the corrected 600 s: {top:?}");
    let kept = on_standin(clients, move |mut wh| {
        let sql = "SELECT source_version AS v FROM core.viewing_sessions WHERE event_id = 'tu-1'";
        wh.query(sql).unwrap().text(0, "v").unwrap().unwrap()
    })
    .await;
    assert!(kept.ends_with(&format!("@{}", versions[1])), "the second upload's row: {kept}, uploads {versions:?}");

    // Two more uploads, whose files load in separate batches, the later
    // upload's first (queue batches commit in any order): the earlier one,
    // loaded after, changes nothing.
    let mut staged = Vec::new();
    for seconds in [1200, 1800] {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let body = format!("{header}tu-1,u1,ch-tu,2034-04-01T10:00:00Z,{seconds}\n");
        staged.push(upload_and_ingest(clients, ingest, &raw, &key, body).await.staged);
    }
    for (files, duplicates, merged) in [(&staged[1], 0, 1), (&staged[0], 1, 0)] {
        let loaded = load.handle(&LoadRequest::Keys { objects: files.clone() }).await.expect("an upload loads");
        let stats = &loaded.loads[&tvetl_core::Source::Viewership];
        assert_eq!(
            (stats.rows_staged, stats.duplicates_removed, stats.rows_merged),
            (1, duplicates, merged),
            "{stats:?}"
        );
    }
    let top = reports_via_data_api(clients, vec!["2034-04-01".into()]).await.0;
    assert_eq!(top[0]["channels"][0]["watch_seconds"], 1860.0, "tu-0's 60 s and the last upload's 1,800 s: {top:?}");
}

/// Redshift fails one of two overlapping transactions with a serializable
/// isolation violation (error 1023). The loser's COPY, ledger and deletes
/// roll back with it, the error is retryable, and the retry loads the rows
/// exactly once. The stand-in makes that conflict on request (see
/// `tests/redshift_standin/standin.py`): batches never overlap there.
async fn a_load_that_loses_a_conflict_commits_nothing_and_its_retry_loads_once(
    clients: &AwsClients,
    load: &LoadWarehouse,
    stream: &IngestStream,
    lake: &str,
) {
    let sessions = [("cf-1", "u1", "2032-08-01T20:00:00Z", 900), ("cf-2", "u2", "2032-08-01T21:00:00Z", 300)];
    stream.handle(kinesis_event(&sessions, 30)).await.expect("the batch is ingested");
    let in_core = || async {
        on_standin(clients, move |mut wh| {
            let mut count = |sql: &str| wh.query(sql).unwrap().int(0, "n").unwrap();
            (
                count("SELECT COUNT(*) AS n FROM core.viewing_sessions WHERE event_id IN ('cf-1', 'cf-2')"),
                count("SELECT COUNT(*) AS n FROM core.load_ledger WHERE event_date = DATE '2032-08-01'"),
            )
        })
        .await
    };
    let marker = lake.to_owned();
    on_standin(clients, move |mut wh| {
        wh.execute_transaction(&[format!("CALL standin_conflict('{marker}', 1)")]).unwrap();
    })
    .await;

    let request = LoadRequest::Prefix { prefix: "staging/viewership/event_date=2032-08-01/".into() };
    let err = load.handle(&request).await.expect_err("the load loses the conflict");
    assert!(err.is_retryable(), "a lost conflict is retried: {err}");
    assert!(err.to_string().contains("Serializable isolation violation"), "{err}");
    assert_eq!(in_core().await, (0, 0), "nothing of the losing load is kept: no sessions, no ledger rows");

    let loaded = load.handle(&request).await.expect("the retry loads");
    let stats = &loaded.loads[&tvetl_core::Source::Viewership];
    assert_eq!((stats.rows_staged, stats.rows_already_loaded, stats.rows_merged), (2, 0, 2), "{stats:?}");
    assert_eq!(in_core().await, (2, 1), "both sessions, one ledger row for the staged file's day");
    let top = reports_via_data_api(clients, vec!["2032-08-01".into()]).await.0;
    assert_eq!(top[0]["channels"][0]["watch_seconds"], 1200.0, "{top:?}");
    assert_eq!(top[0]["channels"][0]["reach"], 2, "{top:?}");

    let again = load.handle(&request).await.expect("a replay after the retry");
    assert_eq!(again.loads[&tvetl_core::Source::Viewership].rows_merged, 0);
    assert_eq!(in_core().await, (2, 1));
}

/// A Kinesis event of sessions on channel `ch-s`, with sequence numbers from
/// `first_seq`.
fn kinesis_event(sessions: &[(&str, &str, &str, u32)], first_seq: u64) -> StreamEvent {
    use base64::Engine;
    let records: Vec<Value> = sessions
        .iter()
        .enumerate()
        .map(|(i, (id, user, start, seconds))| {
            let data = serde_json::json!({"event_id": id, "user_id": user, "channel_id": "ch-s",
                                          "start_time": start, "duration_seconds": seconds});
            let seq = format!("{:056}", first_seq + i as u64);
            serde_json::json!({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "box", "sequenceNumber": seq,
                            "data": base64::engine::general_purpose::STANDARD.encode(data.to_string()),
                            "approximateArrivalTimestamp": 1_893_456_000.0},
                "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": format!("shardId-000000000000:{seq}"),
                "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::000000000000:role/ingest-stream",
                "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/tvetl-views"
            })
        })
        .collect();
    StreamEvent::from_value(serde_json::json!({ "Records": records })).unwrap()
}

/// A queued batch whose load fails retryably (here: Redshift unreachable)
/// comes back after its backoff, not after the queue's visibility timeout;
/// the message's receive count then doubles the next backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the emulator: run scripts/test.sh"]
async fn a_queued_batch_that_fails_retryably_returns_after_its_backoff() {
    use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

    let mut clients = AwsClients::load().await;
    let lake = unique("lake");
    clients.s3.create_bucket().bucket(&lake).send().await.unwrap();
    let key = "staging/viewership/event_date=2024-01-01/part-0000000000000001.parquet";
    clients.s3.put_object().bucket(&lake).key(key).body(b"PAR1".to_vec().into()).send().await.unwrap();

    // The queue's own timeout is far longer than the test waits.
    let queue = unique("load-queue");
    let url = clients
        .sqs
        .create_queue()
        .queue_name(&queue)
        .attributes(QueueAttributeName::VisibilityTimeout, "600")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let notification = serde_json::to_string(&s3_event(&lake, &[key.to_owned()])).unwrap();
    clients.sqs.send_message().queue_url(&url).message_body(notification).send().await.unwrap();

    // Lambda's event source, by hand: receive, and hand over as an SqsEvent.
    let receive = |wait: i32| {
        let (sqs, url) = (clients.sqs.clone(), url.clone());
        async move {
            sqs.receive_message()
                .queue_url(&url)
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default()
        }
    };
    let messages = receive(5).await;
    assert_eq!(messages.len(), 1);
    let as_event = |messages: &[aws_sdk_sqs::types::Message]| -> LoadRequest {
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let count = &m.attributes().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount];
                serde_json::json!({
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "attributes": {"ApproximateReceiveCount": count},
                    "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1",
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    };
    let request = as_event(&messages);
    assert!(matches!(request, LoadRequest::Sqs(_)));

    // Redshift's Data API is unreachable: a retryable failure.
    clients.redshift_data = aws_sdk_redshiftdata::Client::from_conf(
        clients
            .redshift_data
            .config()
            .to_builder()
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(aws_sdk_redshiftdata::config::retry::RetryConfig::standard().with_max_attempts(1))
            .build(),
    );
    let backoff = RetryBackoff { base_seconds: 2, max_seconds: 60 };
    let load = LoadWarehouse::new(clients.clone(), load_config(&lake, backoff));
    let err = load.handle(&request).await.expect_err("Redshift is unreachable");
    assert!(err.is_retryable(), "{err}");

    // Back after about 2 s, though the queue would have hidden it for 600.
    let again = receive(10).await;
    assert_eq!(again.len(), 1, "the message is received again after its backoff");
    let count = &again[0].attributes().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount];
    assert_eq!(count, "2");

    // Its second failure backs off for 4 s: not back within 1 s, back within 10.
    load.handle(&as_event(&again)).await.expect_err("still unreachable");
    assert!(receive(1).await.is_empty(), "the second backoff is longer");
    assert_eq!(receive(10).await.len(), 1);
}
