//! S3 as an [`ObjectStore`]: streamed reads, multipart writes that become
//! visible only on commit, and ETags as versions (with the S3 version id, on
//! a store that [names object versions](S3ObjectStore::with_object_versions)).

use std::io::{Read, Write};
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, GlacierJobParameters, RestoreRequest as RestoreRequestBody, Tier,
};
use tokio::runtime::Handle;

use super::{describe, is_retryable};
use crate::part_buffer::{PartBuffer, UploadMemory};
use crate::store::{ObjectMeta, ObjectStore, ObjectUpload, StoreError};

/// Parts of a multipart upload (S3's minimum is 5 MiB).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// What the open uploads of one store hold in memory together before they
/// spill their parts in the making to temporary files: 8 parts.
pub const DEFAULT_UPLOAD_MEMORY: usize = 64 * 1024 * 1024;

/// One bucket.
#[derive(Clone)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
    handle: Handle,
    part_size: usize,
    memory: Arc<UploadMemory>,
    object_versions: bool,
}

impl S3ObjectStore {
    /// A store over `bucket`, driving the SDK on `handle`.
    pub fn new(client: Client, bucket: impl Into<String>, handle: Handle) -> Self {
        S3ObjectStore {
            client,
            bucket: bucket.into(),
            handle,
            part_size: DEFAULT_PART_SIZE,
            memory: Arc::new(UploadMemory::new(DEFAULT_UPLOAD_MEMORY, std::env::temp_dir())),
            object_versions: false,
        }
    }

    /// Names each object's version by its S3 version id and upload time as
    /// well as its ETag (`<upload time>_<etag>@<version id>`:
    /// [`ObjectMeta::version_with_id`]), where the bucket keeps versions, and reads
    /// the version named. Every upload to a versioned bucket is a version of
    /// its own, so content put back to what a key held before is a new
    /// version, with its own staging files, and a later load takes it; by
    /// ETag alone it would be the earlier version again, which the ledger
    /// has loaded. An object stored while the bucket kept no versions (no
    /// version id, or `null`) is named by its ETag, as on any store.
    ///
    /// For the raw bucket: [`list`](ObjectStore::list) then lists object
    /// versions, the latest of each key, so that a listing and a head name
    /// the same version alike. The lake keeps ETags, which its compaction
    /// compares between a listing and a head.
    pub fn with_object_versions(mut self) -> Self {
        self.object_versions = true;
        self
    }

    /// Uses parts of `bytes` (at least 5 MiB, except in tests against an
    /// emulator).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    /// Lets this store's open uploads hold `bytes` in memory together; beyond
    /// that, parts in the making go to temporary files in `spill_dir`.
    pub fn with_upload_memory(mut self, bytes: usize, spill_dir: impl Into<std::path::PathBuf>) -> Self {
        self.memory = Arc::new(UploadMemory::new(bytes, spill_dir));
        self
    }

    /// What this store's uploads hold in memory now, and may hold.
    pub fn upload_memory(&self) -> &UploadMemory {
        &self.memory
    }

    /// Asks S3 to restore an archived object ([`StoreError::Archived`]) for
    /// `days` days at `tier` (`Bulk`, `Standard` or `Expedited`). S3 answers
    /// at once and restores in the background (minutes to hours); the
    /// bucket's `s3:ObjectRestore:Completed` notification says when.
    pub fn request_restore(&self, key: &str, days: i32, tier: &str) -> Result<RestoreRequest, StoreError> {
        let request =
            RestoreRequestBody::builder()
                .days(days)
                .glacier_job_parameters(GlacierJobParameters::builder().tier(Tier::from(tier)).build().map_err(
                    |e| StoreError::Service { key: key.to_owned(), message: e.to_string(), retryable: false },
                )?)
                .build();
        let sent = self
            .handle
            .block_on(self.client.restore_object().bucket(&self.bucket).key(key).restore_request(request).send());
        match sent {
            Ok(_) => Ok(RestoreRequest::Requested),
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("RestoreAlreadyInProgress") => {
                Ok(RestoreRequest::AlreadyInProgress)
            }
            Err(e) => Err(service_error(key, e)),
        }
    }

    /// The version of an object with `etag` and `version_id`, last
    /// modified at `last_modified`, as this store names it.
    fn object_version(
        &self,
        e_tag: Option<&str>,
        version_id: Option<&str>,
        last_modified: Option<&aws_sdk_s3::primitives::DateTime>,
    ) -> String {
        match version_id {
            Some(id) if self.object_versions => ObjectMeta::version_with_id(&etag(e_tag), id, micros(last_modified)),
            _ => etag(e_tag),
        }
    }

    /// The latest version of every object under `prefix`
    /// (ListObjectVersions), named as [`ObjectStore::head`] names them.
    async fn list_latest_versions(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| service_error(prefix, e))?;
            // A key whose latest version is a delete marker has none here.
            for v in page.versions().iter().filter(|v| v.is_latest() == Some(true)) {
                out.push(ObjectMeta {
                    key: v.key().unwrap_or_default().to_owned(),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    version: self.object_version(v.e_tag(), v.version_id(), v.last_modified()),
                    last_modified_us: micros(v.last_modified()),
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Err(StoreError::Service {
                    key: prefix.to_owned(),
                    message: "a truncated ListObjectVersions page named no next key".to_owned(),
                    retryable: true,
                });
            }
        }
    }

    /// GetObject, streamed: of `version_id` when given, else of the key's
    /// current bytes, with `if_match` only while they have that ETag.
    fn get(
        &self,
        key: &str,
        if_match: Option<String>,
        version_id: Option<&str>,
    ) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(if_match)
            .set_version_id(version_id.map(str::to_owned));
        let object = self.handle.block_on(request.send()).map_err(|e| {
            if let SdkError::ServiceError(service) = &e {
                if let GetObjectError::InvalidObjectState(state) = service.err() {
                    let storage_class = state.storage_class().map_or("an archive storage class", |c| c.as_str());
                    return StoreError::Archived { key: key.to_owned(), storage_class: storage_class.to_owned() };
                }
                if service.raw().status().as_u16() == 412 {
                    let message = "changed since it was listed (412 Precondition Failed on its ETag)".to_owned();
                    return StoreError::Service { key: key.to_owned(), message, retryable: true };
                }
            }
            service_error(key, e)
        })?;
        // The body streams: the decoder pulls bytes as it needs them.
        let reader = Box::pin(object.body.into_async_read());
        Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(reader, self.handle.clone())))
    }
}

/// What [`S3ObjectStore::request_restore`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreRequest {
    /// A restore was started (or the object's restored copy extended).
    Requested,
    /// A restore of the object was already under way.
    AlreadyInProgress,
}

fn service_error<E>(key: &str, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(e) = &error
        && (matches!(e.err().code(), Some("NoSuchKey" | "NotFound")) || e.raw().status().as_u16() == 404)
    {
        return StoreError::NotFound { key: key.to_owned() };
    }
    StoreError::Service { key: key.to_owned(), message: describe(&error), retryable: is_retryable(&error) }
}

fn micros(t: Option<&aws_sdk_s3::primitives::DateTime>) -> i64 {
    t.map_or(0, |t| t.secs() * 1_000_000 + i64::from(t.subsec_nanos() / 1000))
}

fn etag(e: Option<&str>) -> String {
    e.unwrap_or_default().trim_matches('"').to_owned()
}

impl ObjectStore for S3ObjectStore {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.handle.block_on(async {
            if self.object_versions {
                let mut out = self.list_latest_versions(prefix).await?;
                out.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
                return Ok(out);
            }
            let mut out = Vec::new();
            let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| service_error(prefix, e))?;
                for o in page.contents() {
                    out.push(ObjectMeta {
                        key: o.key().unwrap_or_default().to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        version: etag(o.e_tag()),
                        last_modified_us: micros(o.last_modified()),
                    });
                }
            }
            out.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
            Ok(out)
        })
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.handle.block_on(async {
            let h = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| service_error(key, e))?;
            Ok(ObjectMeta {
                key: key.to_owned(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                version: self.object_version(h.e_tag(), h.version_id(), h.last_modified()),
                last_modified_us: micros(h.last_modified()),
            })
        })
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        self.get(key, None, None)
    }

    /// Reads the version listed: by its S3 version id when it has one (an
    /// object overwritten since is still read as it was listed, and its new
    /// version has its own notification), else only while the object has
    /// the ETag it was listed with (`If-Match`). An unversioned object
    /// overwritten between the HEAD and the GET is refused with 412,
    /// retryably: the retry heads it again and reads the new bytes under
    /// their own ETag, instead of recording them under the old one.
    fn open_listed(&self, object: &ObjectMeta) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        match ObjectMeta::version_parts(&object.version) {
            (_, Some(version_id)) => self.get(&object.key, None, Some(version_id)),
            ("", None) => self.get(&object.key, None, None),
            (etag, None) => self.get(&object.key, Some(format!("\"{etag}\"")), None),
        }
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload + '_>, StoreError> {
        Ok(Box::new(S3Upload {
            store: self,
            key: key.to_owned(),
            buffer: PartBuffer::new(self.memory.clone(), self.part_size),
            upload_id: None,
            parts: Vec::new(),
            committed: false,
        }))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.handle
            .block_on(self.client.delete_object().bucket(&self.bucket).key(key).send())
            .map(|_| ())
            .map_err(|e| service_error(key, e))
    }
}

/// A write that stays invisible until [`ObjectUpload::commit`]: small objects
/// are one PutObject at commit; large ones a multipart upload whose parts go
/// out as the buffer fills, completed at commit and aborted on drop. The
/// buffer spills to a temporary file when the store's uploads together hold
/// their memory budget.
struct S3Upload<'s> {
    store: &'s S3ObjectStore,
    key: String,
    buffer: PartBuffer,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    committed: bool,
}

impl S3Upload<'_> {
    fn send_part(&mut self, body: Vec<u8>) -> Result<(), StoreError> {
        let s = self.store;
        s.handle.block_on(async {
            if self.upload_id.is_none() {
                let created = s
                    .client
                    .create_multipart_upload()
                    .bucket(&s.bucket)
                    .key(&self.key)
                    .send()
                    .await
                    .map_err(|e| service_error(&self.key, e))?;
                self.upload_id = created.upload_id().map(str::to_owned);
            }
            let number = self.parts.len() as i32 + 1;
            let part = s
                .client
                .upload_part()
                .bucket(&s.bucket)
                .key(&self.key)
                .upload_id(self.upload_id.as_deref().unwrap_or_default())
                .part_number(number)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| service_error(&self.key, e))?;
            self.parts
                .push(CompletedPart::builder().part_number(number).set_e_tag(part.e_tag().map(str::to_owned)).build());
            Ok(())
        })
    }
}

impl Write for S3Upload<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.write(buf)?;
        if let Some(part) = self.buffer.take_part()? {
            self.send_part(part).map_err(std::io::Error::other)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ObjectUpload for S3Upload<'_> {
    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let s = self.store;
        let rest = self.buffer.take_rest().map_err(|source| StoreError::Io { key: self.key.clone(), source })?;
        if self.upload_id.is_none() {
            s.handle
                .block_on(s.client.put_object().bucket(&s.bucket).key(&self.key).body(ByteStream::from(rest)).send())
                .map_err(|e| service_error(&self.key, e))?;
        } else {
            if !rest.is_empty() {
                self.send_part(rest)?;
            }
            let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
            s.handle
                .block_on(
                    s.client
                        .complete_multipart_upload()
                        .bucket(&s.bucket)
                        .key(&self.key)
                        .upload_id(self.upload_id.as_deref().unwrap_or_default())
                        .multipart_upload(parts)
                        .send(),
                )
                .map_err(|e| service_error(&self.key, e))?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for S3Upload<'_> {
    fn drop(&mut self) {
        if let (false, Some(id)) = (self.committed, self.upload_id.take()) {
            let s = self.store;
            // Best effort: a lifecycle rule aborts what this cannot.
            let _ = s
                .handle
                .block_on(s.client.abort_multipart_upload().bucket(&s.bucket).key(&self.key).upload_id(id).send());
        }
    }
}
