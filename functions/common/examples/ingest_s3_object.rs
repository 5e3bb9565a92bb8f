//! ingest-batch's handler in process, over one raw object, for measuring it
//! (`bench/lambda_ingest.sh` runs it under `/usr/bin/time -v`).
//!
//! ```text
//! ingest_s3_object put BUCKET KEY FILE     upload FILE (creating BUCKET)
//! ingest_s3_object ingest BUCKET KEY       the handler, asked for s3://BUCKET/KEY
//! ingest_s3_object digest BUCKET PREFIX    one line per object: xxh3 of its bytes, size, key
//! ```
//!
//! `ingest` reads the function's own environment (`LAKE_BUCKET`,
//! `GLUE_DATABASE`, `MULTIPART_PART_SIZE`, `UPLOAD_MEMORY_BYTES`) and prints
//! the handler's response. Point `AWS_ENDPOINT_URL` at an emulator.

use tvetl_lambda::ingest::{IngestBatch, IngestRequest};
use tvetl_lambda::{AwsClients, IngestConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let clients = AwsClients::load().await;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["put", bucket, key, file] => put(&clients, bucket, key, file).await,
        ["ingest", bucket, key] => ingest(clients, bucket, key).await,
        ["digest", bucket, prefix] => digest(&clients, bucket, prefix).await,
        _ => Err("usage: ingest_s3_object put BUCKET KEY FILE | ingest BUCKET KEY | digest BUCKET PREFIX".into()),
    }
}

async fn put(clients: &AwsClients, bucket: &str, key: &str, file: &str) -> Result<(), Error> {
    // An existing bucket is fine: the emulator answers with an error we ignore.
    let _ = clients.s3.create_bucket().bucket(bucket).send().await;
    let body = aws_sdk_s3::primitives::ByteStream::from_path(file).await?;
    clients.s3.put_object().bucket(bucket).key(key).body(body).send().await?;
    Ok(())
}

async fn ingest(clients: AwsClients, bucket: &str, key: &str) -> Result<(), Error> {
    let config = IngestConfig::from_env()?;
    let _ = clients.s3.create_bucket().bucket(&config.lake_bucket).send().await;
    let function = IngestBatch { clients, config };
    let request = IngestRequest::Object { bucket: bucket.to_owned(), key: key.to_owned() };
    let response = function.handle(&request).await?;
    println!("{}", serde_json::to_string(&response)?);
    Ok(())
}

async fn digest(clients: &AwsClients, bucket: &str, prefix: &str) -> Result<(), Error> {
    let mut pages = clients.s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        for object in page?.contents() {
            let key = object.key().unwrap_or_default();
            let body = clients.s3.get_object().bucket(bucket).key(key).send().await?.body.collect().await?;
            let bytes = body.into_bytes();
            println!("{:016x} {:>10} {key}", xxhash_rust::xxh3::xxh3_64(&bytes), bytes.len());
        }
    }
    Ok(())
}
