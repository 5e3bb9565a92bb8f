//! `ingest-batch` against a local AWS emulator (ministack), in process: raw
//! files in a bucket, an S3 event, and then the lake objects and Glue
//! partitions that must exist.
//!
//! Run by `scripts/test.sh`, which starts the emulator and exports
//! `AWS_ENDPOINT_URL`; ignored by a plain `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use aws_lambda_events::event::s3::S3Event;
use tvetl_lambda::ingest::{IngestBatch, IngestRequest};
use tvetl_lambda::{AwsClients, IngestConfig, RestorePolicy};

fn emulator_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL must point at the emulator (scripts/test.sh sets it)")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The emulator's clients, and a new bucket for each of `names` (made unique).
async fn clients_with_buckets<const N: usize>(names: [&str; N]) -> (AwsClients, [String; N]) {
    emulator_endpoint();
    let clients = AwsClients::load().await;
    let buckets = names.map(unique);
    for bucket in &buckets {
        clients.s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    (clients, buckets)
}

/// An S3 notification with keys encoded as S3 encodes them.
fn s3_event(bucket: &str, keys: &[&str]) -> S3Event {
    let records: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            let encoded: String = k
                .bytes()
                .map(|b| match b {
                    b' ' => "+".to_owned(),
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => (b as char).to_string(),
                    other => format!("%{other:02X}"),
                })
                .collect();
            serde_json::json!({
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": "2024-01-02T03:04:05.000Z", "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:EXAMPLE"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "EXAMPLE", "x-amz-id-2": "EXAMPLE"},
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                       "object": {"key": encoded, "size": 1, "eTag": "0", "sequencer": "0"}, "configurationId": "raw"}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

async fn lake_objects(clients: &AwsClients, bucket: &str) -> BTreeMap<String, (String, i64)> {
    let mut out = BTreeMap::new();
    let listed = clients.s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    for o in listed.contents() {
        out.insert(o.key().unwrap().to_owned(), (o.e_tag().unwrap_or_default().to_owned(), o.size().unwrap_or(0)));
    }
    out
}

fn dirty_csv() -> Vec<u8> {
    let mut csv =
        String::from("\u{feff}EVENT_ID,user_id,Channel_ID,start_time,end_time,duration_seconds,platform,ad_slot\r\n");
    for i in 0..3000 {
        let day = 1 + i % 3;
        csv.push_str(&format!("e{i},u{},c{},2024-01-0{day}T23:30:00Z,,{},stb,x\r\n", i % 50, i % 7, 600 + i % 3600));
    }
    csv.push_str("bad1,,c1,2024-01-01T10:00:00Z,,60,stb,\r\n"); // MISSING_FIELD
    csv.push_str("bad2,u1,c1,yesterday,,60,stb,\r\n"); // BAD_TIMESTAMP
    csv.push_str("bad3,u1,c1,2024-01-01T10:00:00Z,2024-01-01T09:00:00Z,,stb,\r\n"); // BAD_DURATION
    csv.push_str("bad4,u1,c1,2024-01-01T10:00:00Z,,90000,stb,\r\n"); // TOO_LONG
    csv.push_str("bad5,u1\r\n"); // MALFORMED
    csv.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the emulator: run scripts/test.sh"]
async fn an_s3_event_lands_parquet_quarantine_and_glue_partitions_and_a_replay_changes_nothing() {
    let (clients, [raw, lake]) = clients_with_buckets(["raw", "lake"]).await;
    let database = unique("tvetl_db").replace('-', "_");
    let csv_key = "viewership/day 1/sessions+late.csv";
    let gz_key = "viewership/broken.csv.gz";
    let channels_key = "channels/channels.json";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&dirty_csv()).unwrap();
    let gz = gz.finish().unwrap();
    for (key, body) in [
        (csv_key, dirty_csv()),
        (gz_key, gz[..gz.len() / 2].to_vec()),
        (channels_key, br#"[{"channel_id":"c1","channel_name":"One"},{"channel_id":"c2"}]"#.to_vec()),
    ] {
        clients.s3.put_object().bucket(&raw).key(key).body(body.into()).send().await.unwrap();
    }

    // Small parts, so the staging files go up as multipart uploads.
    let config = IngestConfig {
        lake_bucket: lake.clone(),
        glue_database: database.clone(),
        part_size: 16 * 1024,
        upload_memory: tvetl_core::aws::s3::DEFAULT_UPLOAD_MEMORY,
        restore_archived: None,
    };
    let function = IngestBatch { clients: clients.clone(), config };
    let event = s3_event(&raw, &[csv_key, gz_key, channels_key]);
    let response = function.handle(&event.clone().into()).await.expect("the event is handled");

    let by_key: BTreeMap<_, _> = response.objects.iter().map(|o| (o.key.as_str(), o)).collect();
    let csv = by_key[csv_key];
    assert_eq!(csv.status, "loaded");
    assert_eq!(csv.counts.rows_read, 3005);
    assert_eq!(csv.counts.rows_accepted, 3000);
    assert_eq!(csv.counts.quarantined.total(), 5);
    for reason in tvetl_core::QuarantineReason::ALL {
        assert_eq!(csv.counts.quarantined.get(reason), 1, "{reason}");
    }
    assert_eq!(by_key[gz_key].status, "failed", "a truncated gzip fails alone");
    assert!(by_key[gz_key].error.as_deref().unwrap().contains(gz_key));
    assert_eq!(by_key[channels_key].status, "loaded");
    assert_eq!(by_key[channels_key].counts.quarantined.missing_field, 1);

    let objects = lake_objects(&clients, &lake).await;
    let staged: Vec<_> = objects.keys().filter(|k| k.starts_with("staging/viewership/event_date=")).collect();
    assert_eq!(staged.len(), 3, "one file per start day: {staged:?}");
    for day in ["2024-01-01", "2024-01-02", "2024-01-03"] {
        assert!(staged.iter().any(|k| k.starts_with(&format!("staging/viewership/event_date={day}/part-"))));
    }
    assert!(objects.keys().any(|k| k.starts_with("staging/channels/part-")));
    assert!(objects.keys().any(|k| k.starts_with("quarantine/viewership/ingest_date=") && k.ends_with(".jsonl")));
    assert!(objects.keys().any(|k| k.contains("/unreadable-") && k.ends_with(".json")), "{objects:?}");

    // The staging files are real Parquet with every accepted row.
    let mut rows = 0;
    for key in &staged {
        let body = clients.s3.get_object().bucket(&lake).key(*key).send().await.unwrap().body.collect().await.unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body.into_bytes())
            .unwrap()
            .build()
            .unwrap();
        rows += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
    }
    assert_eq!(rows, 3000);

    // Glue: the table and one partition per day.
    let table = clients.glue.get_table().database_name(&database).name("viewership").send().await.unwrap();
    let table = table.table().unwrap();
    assert_eq!(table.partition_keys()[0].name(), "event_date");
    let location = table.storage_descriptor().unwrap().location().unwrap();
    assert_eq!(location, format!("s3://{lake}/staging/viewership/"));
    let partitions =
        clients.glue.get_partitions().database_name(&database).table_name("viewership").send().await.unwrap();
    let mut values: Vec<String> = partitions.partitions().iter().map(|p| p.values()[0].clone()).collect();
    values.sort();
    assert_eq!(values, ["2024-01-01", "2024-01-02", "2024-01-03"]);

    // The quarantines are tables too (JSON lines), with the partitions of
    // the bad records' and the unreadable object's landing day.
    let quarantine_days = |source: &str| -> BTreeSet<String> {
        objects
            .keys()
            .filter(|k| k.starts_with(&format!("quarantine/{source}/")))
            .map(|k| k.split('/').nth(2).unwrap().strip_prefix("ingest_date=").unwrap().to_owned())
            .collect()
    };
    for (table_name, days) in
        [("quarantine_viewership", quarantine_days("viewership")), ("quarantine_channels", quarantine_days("channels"))]
    {
        assert!(!days.is_empty(), "{table_name}: its objects are in the lake");
        let table = clients.glue.get_table().database_name(&database).name(table_name).send().await.unwrap();
        let sd = table.table().unwrap().storage_descriptor().unwrap();
        assert_eq!(sd.serde_info().unwrap().serialization_library(), Some("org.openx.data.jsonserde.JsonSerDe"));
        let prefix = table_name.replace("quarantine_", "quarantine/");
        assert_eq!(sd.location().unwrap(), format!("s3://{lake}/{prefix}/"));
        let columns: Vec<&str> = sd.columns().iter().map(|c| c.name()).collect();
        for column in ["source_key", "record_no", "reason", "original", "error"] {
            assert!(columns.contains(&column), "{table_name}: {columns:?}");
        }
        let partitions =
            clients.glue.get_partitions().database_name(&database).table_name(table_name).send().await.unwrap();
        let values: BTreeSet<String> = partitions.partitions().iter().map(|p| p.values()[0].clone()).collect();
        assert_eq!(values, days, "{table_name}");
    }

    // The same event again: the same objects with the same bytes.
    let again = function.handle(&event.clone().into()).await.expect("a replay is handled");
    assert_eq!(again.totals, response.totals);
    assert_eq!(lake_objects(&clients, &lake).await, objects);
    let partitions =
        clients.glue.get_partitions().database_name(&database).table_name("viewership").send().await.unwrap();
    assert_eq!(partitions.partitions().len(), 3);

    // The backfill's request: one object named as stored (a space and a `+`
    // in the key, not encoded). It ingests the object as its notification did.
    let named = IngestRequest::Object { bucket: raw.clone(), key: csv_key.to_owned() };
    let backfilled = function.handle(&named).await.expect("a named object is handled");
    assert_eq!(backfilled.objects.len(), 1);
    assert_eq!(backfilled.objects[0].status, "loaded");
    assert_eq!(backfilled.totals, csv.counts);
    assert_eq!(backfilled.objects[0].staged, csv.staged);
    assert_eq!(lake_objects(&clients, &lake).await, objects, "the same objects with the same bytes");

    // A folder marker, as a backfill lists it: skipped, nothing quarantined.
    let folder = IngestRequest::Object { bucket: raw.clone(), key: "viewership/day 1/".to_owned() };
    let skipped = function.handle(&folder).await.expect("a folder marker is handled");
    assert_eq!(skipped.objects[0].status, "skipped");
    assert_eq!(skipped.totals.rows_read, 0);
    assert_eq!(lake_objects(&clients, &lake).await, objects, "a folder marker writes nothing");
}

/// Every object under `prefix` with its bytes.
async fn lake_bytes(clients: &AwsClients, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let listed = clients.s3.list_objects_v2().bucket(bucket).prefix(prefix).send().await.unwrap();
    for o in listed.contents() {
        let key = o.key().unwrap();
        let body = clients.s3.get_object().bucket(bucket).key(key).send().await.unwrap().body.collect().await.unwrap();
        out.insert(key.to_owned(), body.into_bytes().to_vec());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the emulator: run scripts/test.sh"]
async fn uploads_over_their_memory_budget_spill_to_disk_and_stage_the_same_bytes() {
    let (clients, [raw, roomy, tight]) = clients_with_buckets(["raw", "lake-roomy", "lake-tight"]).await;
    // Six days, interleaved, of several row groups each: every day's upload
    // holds bytes while the others fill, as an object spanning many days has
    // its row groups written out early (StagingOptions' limits).
    let mut csv = String::from("event_id,user_id,channel_id,start_time,duration_seconds,platform\n");
    for i in 0..60_000 {
        csv.push_str(&format!(
            "e{i},u{},c{},2024-03-0{}T{:02}:00:00Z,{},web\n",
            i % 997,
            i % 13,
            1 + i % 6,
            i % 24,
            60 + i % 5000
        ));
    }
    let key = "viewership/six-days.csv";
    clients.s3.put_object().bucket(&raw).key(key).body(csv.into_bytes().into()).send().await.unwrap();

    let handle = tokio::runtime::Handle::current();
    let store = |bucket: &str| tvetl_core::aws::s3::S3ObjectStore::new(clients.s3.clone(), bucket, handle.clone());
    let spill_dir = tempfile::tempdir().unwrap();
    let part_size = 64 * 1024;
    let budget = 96 * 1024;
    let raw_store = store(&raw);
    let roomy_store = store(&roomy).with_part_size(part_size);
    let tight_store = store(&tight).with_part_size(part_size).with_upload_memory(budget, spill_dir.path());
    let (roomy_store, tight_store) = tokio::task::spawn_blocking(move || {
        use tvetl_core::store::ObjectStore;
        let object = raw_store.head(key).unwrap();
        let staging =
            tvetl_core::staging::StagingOptions { batch_rows: 1024, row_group_rows: 2048, ..Default::default() };
        let options = tvetl_core::ingest::IngestOptions { staging };
        for lake in [&roomy_store, &tight_store] {
            let report = tvetl_core::ingest::ingest_object(&raw_store, &object, lake, &options).unwrap();
            assert_eq!(report.counts.rows_accepted, 60_000);
        }
        (roomy_store, tight_store)
    })
    .await
    .unwrap();

    assert_eq!(roomy_store.upload_memory().spills(), 0, "64 MiB holds every part in the making");
    assert!(tight_store.upload_memory().spills() > 0, "six uploads of up to 64 KiB each cannot stay within 96 KiB");
    assert_eq!(tight_store.upload_memory().used(), 0, "committed uploads hold no memory");
    assert_eq!(std::fs::read_dir(spill_dir.path()).unwrap().count(), 0, "no spill file is left behind");

    let (roomy_objects, tight_objects) =
        (lake_bytes(&clients, &roomy, "staging/").await, lake_bytes(&clients, &tight, "staging/").await);
    assert_eq!(roomy_objects.len(), 6, "one file per day: {:?}", roomy_objects.keys());
    assert!(roomy_objects.values().any(|b| b.len() > part_size), "some files go up in several parts");
    assert_eq!(tight_objects, roomy_objects, "spilled uploads stage the same bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the emulator: run scripts/test.sh"]
async fn an_archived_object_is_reported_restored_and_then_loaded_while_the_rest_loads_at_once() {
    use aws_sdk_s3::types::StorageClass;
    let (clients, [raw, lake]) = clients_with_buckets(["raw", "lake"]).await;
    let database = unique("tvetl_db").replace('-', "_");
    // Glacier Flexible Retrieval is unreadable until restored; Glacier
    // Instant Retrieval reads like Standard.
    let (archived_key, instant_key, fresh_key) =
        ("viewership/2023/old.csv", "viewership/2023/instant.csv", "viewership/2024/new.csv");
    let fresh = b"event_id,user_id,channel_id,start_time,duration_seconds\nn1,u1,c1,2024-02-01T10:00:00Z,60\n";
    for (key, body, class) in [
        (archived_key, dirty_csv(), StorageClass::Glacier),
        (instant_key, dirty_csv(), StorageClass::GlacierIr),
        (fresh_key, fresh.to_vec(), StorageClass::Standard),
    ] {
        let put = clients.s3.put_object().bucket(&raw).key(key).body(body.into()).storage_class(class);
        put.send().await.unwrap();
    }
    let config = |restore_archived| IngestConfig {
        lake_bucket: lake.clone(),
        glue_database: database.clone(),
        part_size: tvetl_core::aws::s3::DEFAULT_PART_SIZE,
        upload_memory: tvetl_core::aws::s3::DEFAULT_UPLOAD_MEMORY,
        restore_archived,
    };

    // Restores off: the archived object is reported, and only reported.
    let reporting = IngestBatch { clients: clients.clone(), config: config(None) };
    let event = s3_event(&raw, &[archived_key, instant_key, fresh_key]);
    let response = reporting.handle(&event.clone().into()).await.expect("an archived object fails alone");
    let by_key: BTreeMap<_, _> = response.objects.iter().map(|o| (o.key.as_str(), o)).collect();
    let archived = by_key[archived_key];
    assert_eq!(archived.status, "archived");
    let error = archived.error.as_deref().unwrap();
    for part in [format!("s3://{raw}/{archived_key}:"), "archived in GLACIER".into(), "RESTORE_ARCHIVED_DAYS".into()] {
        assert!(error.contains(&part), "{part:?} in {error}");
    }
    assert_eq!((archived.restore, archived.quarantine_key.as_deref()), (None, None));
    assert_eq!(archived.counts.rows_read, 0);
    assert_eq!(by_key[instant_key].status, "loaded");
    assert_eq!(by_key[instant_key].counts.rows_accepted, 3000);
    assert_eq!(by_key[fresh_key].status, "loaded");
    assert_eq!(response.totals.rows_accepted, 3001);
    let head = clients.s3.head_object().bucket(&raw).key(archived_key).send().await.unwrap();
    assert_eq!(head.restore(), None, "no restore was requested");
    let objects = lake_objects(&clients, &lake).await;
    assert!(!objects.keys().any(|k| k.contains("unreadable-")), "an archived object is not quarantined: {objects:?}");

    // Restores on: requested once, then found under way.
    let restoring =
        IngestBatch { clients: clients.clone(), config: config(Some(RestorePolicy { days: 1, tier: "Bulk".into() })) };
    let backfill = IngestRequest::Object { bucket: raw.clone(), key: archived_key.to_owned() };
    let first = restoring.handle(&backfill).await.expect("a restore is requested");
    assert_eq!((first.objects[0].status, first.objects[0].restore), ("archived", Some("requested")));
    assert!(first.objects[0].error.as_deref().unwrap().contains("a Bulk restore for 1 days is requested"));
    let second = restoring.handle(&backfill).await.expect("a second request finds it under way");
    assert_eq!((second.objects[0].status, second.objects[0].restore), ("archived", Some("in_progress")));
    assert_eq!(lake_objects(&clients, &lake).await, objects, "nothing of the archived object is written yet");

    // The emulator restores in seconds (S3 in hours); then the bucket's
    // restore-completed notification ingests the restored copy.
    let mut waited = 0;
    loop {
        let head = clients.s3.head_object().bucket(&raw).key(archived_key).send().await.unwrap();
        let restore = head.restore().unwrap_or_default().to_owned();
        assert!(restore.contains("ongoing-request"), "a restore is recorded: {restore:?}");
        if restore.contains("ongoing-request=\"false\"") {
            break;
        }
        waited += 1;
        assert!(waited < 300, "the emulator's restore did not complete: {restore:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut completed = s3_event(&raw, &[archived_key]);
    completed.records[0].event_name = Some("ObjectRestore:Completed".into());
    let loaded = restoring.handle(&completed.into()).await.expect("the restored copy loads");
    let outcome = &loaded.objects[0];
    assert_eq!((outcome.status, outcome.restore, outcome.error.as_deref()), ("loaded", None, None));
    assert_eq!(outcome.counts, by_key[instant_key].counts, "the same rows as its readable twin");
    assert!(outcome.quarantine_key.is_some(), "its bad records are quarantined as usual");
}

/// A raw CSV of one session whose user is `user`, which tells apart the
/// versions of one object.
fn one_session_csv(user: &str) -> String {
    format!("event_id,user_id,channel_id,start_time,duration_seconds\ne1,{user},c1,2024-03-01T10:00:00Z,60\n")
}

/// The values of `columns` in the first row of the only file in `lake`.
async fn the_staged_row(clients: &AwsClients, lake: &str, columns: &[&str]) -> Vec<String> {
    let staged = lake_objects(clients, lake).await;
    assert_eq!(staged.len(), 1, "{staged:?}");
    let key = staged.keys().next().unwrap();
    let body = clients.s3.get_object().bucket(lake).key(key).send().await.unwrap().body.collect().await.unwrap();
    let mut reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body.into_bytes())
        .unwrap()
        .build()
        .unwrap();
    let batch = reader.next().unwrap().unwrap();
    let text = |column: &str| {
        let values = batch.column_by_name(column).unwrap();
        arrow_array::cast::AsArray::as_string::<i32>(values.as_ref()).value(0).to_owned()
    };
    columns.iter().map(|c| text(c)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the emulator: run scripts/test.sh"]
async fn an_object_overwritten_after_its_head_is_refused_retryably_then_read_as_it_now_is() {
    let (clients, [raw, lake]) = clients_with_buckets(["raw", "lake"]).await;
    let key = "viewership/day.csv";
    let put = |user: &str| {
        let body = one_session_csv(user).into_bytes();
        clients.s3.put_object().bucket(&raw).key(key).body(body.into()).send()
    };
    put("first").await.unwrap();

    let handle = tokio::runtime::Handle::current();
    let raw_store = tvetl_core::aws::s3::S3ObjectStore::new(clients.s3.clone(), &raw, handle.clone());
    let lake_store = tvetl_core::aws::s3::S3ObjectStore::new(clients.s3.clone(), &lake, handle);
    let listed = tokio::task::spawn_blocking({
        let raw_store = raw_store.clone();
        move || tvetl_core::store::ObjectStore::head(&raw_store, key).unwrap()
    })
    .await
    .unwrap();
    // Overwritten between the HEAD and the GET.
    put("second").await.unwrap();

    let (refused, now) = tokio::task::spawn_blocking(move || {
        use tvetl_core::store::ObjectStore;
        let options = tvetl_core::ingest::IngestOptions::default();
        let refused = tvetl_core::ingest::ingest_object(&raw_store, &listed, &lake_store, &options).unwrap_err();
        assert!(lake_store.list("").unwrap().is_empty(), "nothing written under the old ETag");
        // The retry heads the object again and reads what it holds now.
        let now = raw_store.head(key).unwrap();
        assert_ne!(now.version, listed.version);
        let report = tvetl_core::ingest::ingest_object(&raw_store, &now, &lake_store, &options).unwrap();
        assert_eq!(report.counts.rows_accepted, 1);
        (refused, now)
    })
    .await
    .unwrap();
    assert!(refused.is_retryable() && !refused.is_bad_object(), "{refused:?}");
    assert!(refused.to_string().contains("changed since it was listed"), "{refused}");
    // The row is the second version's, recorded under that version's ETag.
    let row = the_staged_row(&clients, &lake, &["user_id", "source_version"]).await;
    assert_eq!(row, ["second", now.version.as_str()]);
}

/// Runs the synchronous store calls off the async workers, as the handlers do.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the emulator: run scripts/test.sh"]
async fn on_a_versioned_bucket_each_upload_is_a_version_read_as_headed_and_listed_alike() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    use tvetl_core::aws::s3::S3ObjectStore;
    use tvetl_core::store::{ObjectMeta, ObjectStore};
    let (clients, [raw, lake]) = clients_with_buckets(["raw", "lake"]).await;
    let key = "viewership/day.csv";
    let put = |user: &str| {
        let body = one_session_csv(user).into_bytes();
        clients.s3.put_object().bucket(&raw).key(key).body(body.into()).send()
    };
    // Stored before the bucket kept versions: its version id is `null`.
    put("before").await.unwrap();
    let enabled = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    clients.s3.put_bucket_versioning().bucket(&raw).versioning_configuration(enabled).send().await.unwrap();

    let handle = tokio::runtime::Handle::current();
    let by_etag = S3ObjectStore::new(clients.s3.clone(), &raw, handle.clone());
    let versioned = by_etag.clone().with_object_versions();
    let lake_store = S3ObjectStore::new(clients.s3.clone(), &lake, handle);
    let head = |store: &S3ObjectStore| {
        let store = store.clone();
        blocking(move || store.head(key).unwrap())
    };
    let list = |store: &S3ObjectStore| {
        let store = store.clone();
        blocking(move || store.list("viewership/").unwrap())
    };

    let before = head(&versioned).await;
    assert_eq!(before.version, head(&by_etag).await.version, "no version id of its own: named by its ETag");

    put("first").await.unwrap();
    let first = head(&versioned).await;
    let (etag, id) = ObjectMeta::version_parts(&first.version);
    assert!(!etag.is_empty() && id.is_some_and(|id| !id.is_empty()), "named by ETag and version id: {}", first.version);
    assert_eq!(head(&by_etag).await.version, etag, "a store without versions names it by its ETag");
    // Its upload time first, to the second, so that one key's versions sort
    // by upload.
    let uploaded = chrono::DateTime::from_timestamp(first.last_modified_us / 1_000_000, 0).unwrap();
    assert!(first.version.starts_with(&format!("{}_", uploaded.format("%Y%m%dT%H%M%SZ"))), "{}", first.version);
    // (Their times differ in precision: a listing's has milliseconds, a
    // head's HTTP date whole seconds.)
    let listed: Vec<_> = list(&versioned).await.into_iter().map(|o| (o.key, o.size, o.version)).collect();
    assert_eq!(listed, [(first.key.clone(), first.size, first.version.clone())], "a listing names it as a head does");

    // Overwritten after the head: the version headed is still read, and
    // recorded under its own name.
    put("second").await.unwrap();
    let report = blocking({
        let (versioned, lake_store, first) = (versioned.clone(), lake_store.clone(), first.clone());
        move || {
            let options = tvetl_core::ingest::IngestOptions::default();
            tvetl_core::ingest::ingest_object(&versioned, &first, &lake_store, &options).unwrap()
        }
    })
    .await;
    assert_eq!(report.counts.rows_accepted, 1);
    assert_ne!(head(&versioned).await.version, first.version);
    let row = the_staged_row(&clients, &lake, &["user_id", "source_version"]).await;
    assert_eq!(row, ["first", first.version.as_str()], "the version headed, not the bytes the key holds now");

    // The first bytes put back: the same ETag, another version.
    put("first").await.unwrap();
    let third = head(&versioned).await;
    assert_eq!(ObjectMeta::version_parts(&third.version).0, etag, "the same bytes");
    assert_ne!(third.version, first.version, "a version of its own");

    // A key whose latest version is a delete marker is not listed.
    clients.s3.delete_object().bucket(&raw).key(key).send().await.unwrap();
    let listed = list(&versioned).await;
    assert!(listed.is_empty(), "deleted: only older versions and a delete marker are left: {listed:?}");
}
