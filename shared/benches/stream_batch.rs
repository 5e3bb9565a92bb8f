//! A 10,000-record stream batch decoded, validated and encoded to Parquet
//! (the ingest-stream hot path), beside the same 10,000 sessions as one JSON
//! Lines object through the batch path as the baseline.
//!
//! `cargo bench -p tvetl-core --bench stream_batch`

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tvetl_core::catalog::NoCatalog;
use tvetl_core::ingest::{IngestOptions, ingest_object};
use tvetl_core::staging::StagingOptions;
use tvetl_core::store::{MemoryObjectStore, ObjectStore};
use tvetl_core::stream::{ShardId, StreamKind, StreamRecord, ingest_stream_batch};

const RECORDS: usize = 10_000;

/// Sessions over two days as a set-top box fleet sends them, one in a
/// hundred of them bad.
fn lines() -> Vec<String> {
    (0..RECORDS)
        .map(|i| {
            if i % 100 == 99 {
                return format!(r#"{{"event_id":"e{i}","user_id":"u{}","channel_id":"c1","start_time":"soon"}}"#, i % 997);
            }
            let day = 1 + (i % 7 == 0) as usize;
            format!(
                r#"{{"event_id":"e{i:08}","user_id":"u{:05}","device_id":"d{:05}","channel_id":"ch-{:03}","program_id":"p{}","start_time":"2024-01-{day:02}T{:02}:{:02}:00Z","duration_seconds":{},"platform":"stb"}}"#,
                i % 997,
                i % 1999,
                i % 120,
                i % 50,
                (i / 60) % 24,
                i % 60,
                60 + i % 3600
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let lines = lines();
    let shard = ShardId { kind: StreamKind::Kinesis, stream: "views".into(), shard: "shardId-000000000000".into() };
    let positions: Vec<String> = (0..RECORDS).map(|i| format!("4959{i:052}")).collect();
    let records: Vec<StreamRecord<'_>> = lines
        .iter()
        .zip(&positions)
        .map(|(l, p)| StreamRecord { position: p.clone(), arrival_us: 1_704_153_600_000_000, data: l.as_bytes() })
        .collect();
    let options = StagingOptions::default();

    let mut group = c.benchmark_group("10k sessions to Parquet");
    group.sample_size(30);
    group.bench_function("stream batch (ingest-stream)", |b| {
        b.iter_batched(
            MemoryObjectStore::new,
            |lake| {
                let (report, failure) = ingest_stream_batch(&lake, &NoCatalog, &shard, &records, &options);
                assert!(failure.is_none());
                assert_eq!(report.counts.rows_read, RECORDS as u64);
                lake
            },
            BatchSize::PerIteration,
        )
    });

    let object = lines.join("\n");
    group.bench_function("JSON Lines object (ingest-batch, baseline)", |b| {
        b.iter_batched(
            || {
                let raw = MemoryObjectStore::new();
                raw.put("viewership/batch.jsonl", object.as_bytes()).unwrap();
                (raw, MemoryObjectStore::new())
            },
            |(raw, lake)| {
                let meta = raw.head("viewership/batch.jsonl").unwrap();
                let report = ingest_object(&raw, &meta, &lake, &IngestOptions::default()).unwrap();
                assert_eq!(report.counts.rows_read, RECORDS as u64);
                (raw, lake)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
