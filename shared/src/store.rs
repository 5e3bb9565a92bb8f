//! The object-storage port and its local adapter (a folder as the bucket).
//!
//! The AWS adapter (S3) implements the same trait in the Lambda side; the
//! core only ever sees [`ObjectStore`].

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use xxhash_rust::xxh3::Xxh3;

/// A failure of the object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object under that key.
    #[error("{key}: no such object")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// A local I/O failure.
    #[error("{key}: {source}")]
    Io {
        /// The object's key.
        key: String,
        /// The file system's error.
        source: std::io::Error,
    },
    /// A remote service failure, as classified by its adapter.
    #[error("{key}: {message}")]
    Service {
        /// The object's key.
        key: String,
        /// The service's error, with its code when the service returned one.
        message: String,
        /// Whether a retry may succeed (a throttle, a timeout, a 5xx).
        retryable: bool,
    },
    /// Reading an object's bytes failed part-way (a connection reset, a
    /// body that ended early, a disk error). The bytes themselves may be
    /// fine, so this is not a fault of the object, and a retry may read it.
    #[error("{key}: reading its bytes failed part-way: {source}")]
    Read {
        /// The object's key.
        key: String,
        /// The store's error, as the object's reader raised it.
        source: std::io::Error,
    },
    /// The object is in an archive storage class (S3 Glacier Flexible
    /// Retrieval or Deep Archive) and has no restored copy: it cannot be
    /// read until it is restored, which takes hours, so a retry now cannot
    /// help either. Its bytes are not at fault, so it is not quarantined.
    #[error("{key}: archived in {storage_class}, not readable until it is restored (S3 RestoreObject)")]
    Archived {
        /// The object's key.
        key: String,
        /// Its storage class, e.g. `GLACIER` or `DEEP_ARCHIVE`.
        storage_class: String,
    },
}

impl StoreError {
    /// True when a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::NotFound { .. } => false,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            StoreError::Service { retryable, .. } => *retryable,
            StoreError::Read { .. } => true,
            StoreError::Archived { .. } => false,
        }
    }

    fn io(key: &str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound { key: key.to_owned() }
        } else {
            StoreError::Io { key: key.to_owned(), source }
        }
    }
}

/// What a listing or head request tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Identity of this version of the object: the S3 ETag (with the S3
    /// version id and upload time, from a store that names object versions:
    /// [`ObjectMeta::version_with_id`]), or locally a hash of the content.
    /// Output names derive from it.
    pub version: String,
    /// Last modification, UTC microseconds.
    pub last_modified_us: i64,
}

/// Sets an S3 version id apart from the ETag in a version's name. An ETag is
/// hex (with `-<parts>` for a multipart upload), so the first `@` ends it.
const VERSION_ID_MARK: char = '@';

/// Sets a version's upload time apart from its ETag, which never holds it.
const UPLOADED_MARK: char = '_';

impl ObjectMeta {
    /// Its size and modification time, as a [`FileStamp`] with no change
    /// time (an object store keeps none).
    pub fn stamp(&self) -> FileStamp {
        FileStamp { size: self.size, last_modified_us: self.last_modified_us, changed_us: 0 }
    }

    /// The version name of an S3 object version:
    /// `<upload time>_<etag>@<version id>`, the upload time (its
    /// LastModified) as `YYYYMMDDTHHMMSSZ`; or the ETag alone when the
    /// object has no version id of its own (`null`: stored while its bucket
    /// kept no versions). It never starts with the mark of a stream batch's
    /// versions.
    ///
    /// The time comes first so that the names of one key's versions sort by
    /// upload, to the second: the loads rank two uploads of one raw file by
    /// it, and the later one wins (`infra/sql/load_viewing_sessions.sql`).
    /// S3 itself keeps the upload with the later time when two overlap.
    /// Whole seconds, because a head tells no more (its time is an HTTP
    /// date), and a listing must name a version as a head does.
    ///
    /// ```
    /// use tvetl_core::store::ObjectMeta;
    /// let uploaded_us = 1_704_103_200_123_456; // 2024-01-01T10:00:00.123456Z
    /// assert_eq!(ObjectMeta::version_with_id("9b2c", "3HL4kq", uploaded_us), "20240101T100000Z_9b2c@3HL4kq");
    /// assert_eq!(ObjectMeta::version_with_id("9b2c", "null", uploaded_us), "9b2c");
    /// ```
    pub fn version_with_id(etag: &str, version_id: &str, uploaded_us: i64) -> String {
        if version_id.is_empty() || version_id == "null" {
            return etag.to_owned();
        }
        let uploaded = chrono::DateTime::from_timestamp(uploaded_us.div_euclid(1_000_000), 0).unwrap_or_default();
        format!("{}{UPLOADED_MARK}{etag}{VERSION_ID_MARK}{version_id}", uploaded.format("%Y%m%dT%H%M%SZ"))
    }

    /// A version name's ETag, and its S3 version id when it has one
    /// ([`ObjectMeta::version_with_id`]).
    pub fn version_parts(version: &str) -> (&str, Option<&str>) {
        match version.split_once(VERSION_ID_MARK) {
            Some((named, id)) => (named.split_once(UPLOADED_MARK).map_or(named, |(_, etag)| etag), Some(id)),
            None => (version, None),
        }
    }
}

/// An object being written; it becomes visible only on [`commit`], and a
/// dropped upload leaves nothing behind.
///
/// [`commit`]: ObjectUpload::commit
pub trait ObjectUpload: Write + Send {
    /// Makes the object visible under its key, replacing any previous one.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// An object's bytes as its store streams them, with every I/O error the
/// store raises marked as the store's ([`StoreBody::store_failure`]). A decoder
/// reading through a decompressor and a parser then tells a broken
/// connection, which a retry may get past, from broken bytes, which it
/// cannot: both reach it as `std::io::Error`s.
pub struct StoreBody<'a> {
    inner: Box<dyn Read + Send + 'a>,
}

/// The mark of an I/O error raised by the store under a [`StoreBody`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StoreReadFault(std::io::Error);

impl<'a> StoreBody<'a> {
    /// Marks the errors of `inner`, a reader from [`ObjectStore::open`].
    pub fn new(inner: Box<dyn Read + Send + 'a>) -> Self {
        StoreBody { inner }
    }

    /// The store's failure behind `error` when a [`StoreBody`] raised it
    /// (through any reader that passes its inner errors on, as the gzip,
    /// CSV and JSON readers do), or `error` given back when the fault is in
    /// the bytes.
    pub fn store_failure(key: &str, error: std::io::Error) -> Result<StoreError, std::io::Error> {
        if error.get_ref().is_some_and(|inner| inner.is::<StoreReadFault>()) {
            let fault = error.into_inner().expect("checked above").downcast::<StoreReadFault>().expect("checked above");
            Ok(StoreError::Read { key: key.to_owned(), source: fault.0 })
        } else {
            Err(error)
        }
    }
}

impl Read for StoreBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| match e.kind() {
            // Readers retry on this kind themselves.
            std::io::ErrorKind::Interrupted => e,
            kind => std::io::Error::new(kind, StoreReadFault(e)),
        })
    }
}

/// A bucket.
pub trait ObjectStore: Send + Sync {
    /// Every object whose key starts with `prefix`, in byte-wise key order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// The metadata of one object.
    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;
    /// Streams an object's bytes.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StoreError>;
    /// Streams the bytes of `object` as it was listed or headed: a store
    /// that can tell refuses, retryably, when its key holds other bytes
    /// now, so that what is read and the version it is recorded under
    /// agree. By default, the key's bytes as they are.
    fn open_listed(&self, object: &ObjectMeta) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        self.open(&object.key)
    }
    /// Starts writing an object.
    fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload + '_>, StoreError>;
    /// Removes an object; removing a missing one is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Writes a whole small object at once.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mut upload = self.create(key)?;
        upload.write_all(bytes).map_err(|e| StoreError::io(key, e))?;
        upload.commit()
    }
}

/// What a file's metadata says of it: while both stay the same, its content
/// is taken to be the same (as `make` and git's index take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Last modification, UTC microseconds (0 where the system keeps none).
    pub last_modified_us: i64,
    /// Last change of the file's inode, UTC microseconds (0 where the
    /// system keeps none, or for an object store's object). Unlike the
    /// modification time, no tool can set it: a file rewritten and given
    /// its old time back (`touch -d`, `cp -p`, an archive extracted again)
    /// still has a new one.
    #[serde(default)]
    pub changed_us: i64,
}

impl FileStamp {
    /// The stamp of a file with this metadata.
    pub fn of(metadata: &std::fs::Metadata) -> FileStamp {
        let last_modified_us = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as i64);
        #[cfg(unix)]
        let changed_us = {
            use std::os::unix::fs::MetadataExt;
            metadata.ctime().saturating_mul(1_000_000).saturating_add(metadata.ctime_nsec() / 1_000)
        };
        #[cfg(not(unix))]
        let changed_us = 0;
        FileStamp { size: metadata.len(), last_modified_us, changed_us }
    }

    /// The later of its two times: how recent the last write or change is.
    pub fn latest_us(&self) -> i64 {
        self.last_modified_us.max(self.changed_us)
    }
}

/// The version [`LocalObjectStore`] gives content: its xxh3 hash, in hex.
fn content_version(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(format!("{:016x}", hasher.digest())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A folder used as a bucket: key `a/b.csv` is the file `ROOT/a/b.csv`.
///
/// Versions are content hashes (xxh3), so a re-copied file with the same bytes
/// is the same version, and an edited one is a new version. Every file is an
/// object, hidden-looking names included, except the temporary file of an
/// upload not yet committed (`.<name>.tmp-<pid>`), in a store that this
/// program writes.
///
/// Keys are UTF-8, as in S3. A file or folder whose name is not has no key:
/// [`LocalObjectStore::listing`] names it apart, as what is not an object.
/// Reading anything that is not a file (a named pipe, a socket, a device)
/// fails, rather than waiting on it.
#[derive(Debug, Clone)]
pub struct LocalObjectStore {
    root: PathBuf,
    /// Whether listings leave out uploads in flight (this store's own
    /// temporary files).
    hides_uploads_in_flight: bool,
}

impl LocalObjectStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalObjectStore { root: root.into(), hides_uploads_in_flight: true }
    }

    /// Lists every file as an object, those named like an upload in flight
    /// too: for a folder this program does not write (the raw input), where
    /// such a name is someone else's file, to be ingested or reported like
    /// any other, not passed over.
    pub fn listing_every_file(mut self) -> Self {
        self.hides_uploads_in_flight = false;
        self
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The keys [`ObjectStore::list`] gives for `prefix`, in the same order,
    /// without reading each object for its version.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.listing(prefix)?.keys)
    }

    /// The keys under `prefix`, as [`LocalObjectStore::keys`] gives them, and
    /// the files and folders there whose names are not UTF-8, which have no
    /// key (the files of such a folder are not walked).
    pub fn listing(&self, prefix: &str) -> Result<FolderListing, StoreError> {
        // Walk from the deepest folder the prefix names, then filter.
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let mut found = FolderListing::default();
        self.walk(&self.path(dir_part), dir_part, Walked::Objects, &mut found)?;
        found.keys.retain(|k| k.starts_with(prefix));
        found.keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        found.not_utf8.retain(|n| n.shown.starts_with(prefix));
        Ok(found)
    }

    /// Removes the temporary files that uploads which never committed left
    /// in the folder `dir` and below, and the folders below `dir` that this
    /// leaves empty; returns the files' paths relative to the root, in
    /// byte-wise order. A writer killed mid-upload leaves its temporary file
    /// (`.<name>.tmp-<pid>`), in a folder it may have made for it: no listing
    /// shows the file and nothing else removes it. An upload still at work
    /// looks the same, so only a caller that knows no other writer uses the
    /// store may call this (`tvetl run` holds the lake's lock).
    pub fn remove_abandoned_uploads(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let top = self.path(dir);
        let mut listing = FolderListing::default();
        self.walk(&top, dir, Walked::UploadsInFlight, &mut listing)?;
        let mut found = listing.keys;
        found.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for path in &found {
            let file = self.path(path);
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(StoreError::io(path, e)),
                _ => {}
            }
            // A folder that still holds anything refuses to go, which ends
            // the climb.
            let mut folder = file.parent();
            while let Some(f) = folder.filter(|f| f.starts_with(&top) && *f != top) {
                if std::fs::remove_dir(f).is_err() {
                    break;
                }
                folder = f.parent();
            }
        }
        Ok(found)
    }

    fn meta(&self, key: String, path: &Path) -> Result<ObjectMeta, StoreError> {
        // Opening a named pipe waits for a writer: look before opening.
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            let message = "not a regular file (a named pipe, socket or device): only files are objects";
            return Err(StoreError::io(&key, std::io::Error::new(std::io::ErrorKind::InvalidData, message)));
        }
        let file = File::open(path).map_err(|e| StoreError::io(&key, e))?;
        let stamp = FileStamp::of(&file.metadata().map_err(|e| StoreError::io(&key, e))?);
        let version = content_version(file).map_err(|e| StoreError::io(&key, e))?;
        Ok(ObjectMeta { key, size: stamp.size, version, last_modified_us: stamp.last_modified_us })
    }

    /// The size and modification time of `key`'s file, without reading it
    /// for its version as [`ObjectStore::head`] does.
    pub fn stamp(&self, key: &str) -> Result<FileStamp, StoreError> {
        std::fs::metadata(self.path(key)).map(|m| FileStamp::of(&m)).map_err(|e| StoreError::io(key, e))
    }

    fn walk(&self, dir: &Path, rel: &str, wanted: Walked, out: &mut FolderListing) -> Result<(), StoreError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(rel, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(rel, e))?;
            let joined = |name: &str| if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                let folder = entry.file_type().is_ok_and(|kind| kind.is_dir());
                let shown = joined(&escaped_name(&entry.file_name())) + if folder { "/" } else { "" };
                out.not_utf8.push(NotUtf8Name { shown, folder });
                continue;
            };
            // Every object is listed, hidden-looking names included (S3 has
            // none, and a raw file named `_late.csv` must still load), except
            // this store's own uploads in flight.
            let in_flight = self.hides_uploads_in_flight && is_upload_in_flight(&name);
            let key = joined(&name);
            let kind = entry.file_type().map_err(|e| StoreError::io(&key, e))?;
            if kind.is_dir() {
                if !in_flight {
                    self.walk(&entry.path(), &key, wanted, out)?;
                }
            } else if in_flight == (wanted == Walked::UploadsInFlight) {
                out.keys.push(key);
            }
        }
        Ok(())
    }
}

impl ObjectStore for LocalObjectStore {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.keys(prefix)?.iter().map(|key| self.head(key)).collect()
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.meta(key.to_owned(), &self.path(key))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        Ok(Box::new(File::open(self.path(key)).map_err(|e| StoreError::io(key, e))?))
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload + '_>, StoreError> {
        let target = self.path(key);
        let dir = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(key, e))?;
        LocalUpload::start(key, upload_temp_beside(&target), OnCommit::MoveTo(target))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(key, e)),
            _ => Ok(()),
        }
    }
}

/// What a [`LocalObjectStore`] holds under a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderListing {
    /// The objects' keys, in byte-wise order.
    pub keys: Vec<String>,
    /// The files and folders whose names are not UTF-8, in the order met.
    pub not_utf8: Vec<NotUtf8Name>,
}

/// A file or folder whose name is not UTF-8, so no object key: S3's keys are
/// UTF-8, and a lossy name (U+FFFD for each byte that is not) could be
/// another file's key, as could any other spelling of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUtf8Name {
    /// Its path under the store, with each byte of a name that is not
    /// UTF-8 written `\xNN` (`caf\xe9.csv`; a folder's ends in `/`), to
    /// show, never to open.
    pub shown: String,
    /// Whether it is a folder, whose files are not listed.
    pub folder: bool,
}

impl NotUtf8Name {
    /// Why it is not read, and what to do.
    pub fn reason(&self) -> &'static str {
        if self.folder {
            "the folder's name is not valid UTF-8, and object keys are UTF-8 (as in S3): rename it; none of its files is read"
        } else {
            "the file's name is not valid UTF-8, and object keys are UTF-8 (as in S3): rename it"
        }
    }
}

/// A name that is not UTF-8, to show: each byte that is not written `\xNN`.
fn escaped_name(name: &std::ffi::OsStr) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut listed = String::new();
        for chunk in name.as_bytes().utf8_chunks() {
            listed.push_str(chunk.valid());
            for byte in chunk.invalid() {
                listed.push_str(&format!("\\x{byte:02x}"));
            }
        }
        listed
    }
    #[cfg(not(unix))]
    name.to_string_lossy().into_owned()
}

/// Which files a walk of a [`LocalObjectStore`] collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walked {
    /// The objects.
    Objects,
    /// The temporary files of uploads not committed.
    UploadsInFlight,
}

/// The temporary name an upload of `name` is written under until commit.
fn upload_temp_name(name: &str) -> String {
    format!(".{name}{UPLOAD_TEMP_MARK}{}", std::process::id())
}

/// Writes `bytes` to the file `path` whole or not at all: into a temporary
/// file beside it (`path` with `.tmp` added), then renamed over it. On a
/// failure (a full disk) the file before stays as it was, and the
/// temporary file is removed.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = with_suffix(path, ".tmp");
    let written = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// `path` with `suffix` added to its file name (`a.duckdb` → `a.duckdb.wal`):
/// a file that goes with it, in the same folder.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// The temporary file, in the same folder, of an upload to the file `target`.
fn upload_temp_beside(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(upload_temp_name(&name))
}

const UPLOAD_TEMP_MARK: &str = ".tmp-";

/// Whether a file name is an upload's temporary name (`.<name>.tmp-<pid>`),
/// left by a writer still at work or one that died before commit.
fn is_upload_in_flight(name: &str) -> bool {
    upload_target(name).is_some()
}

/// The name an upload's temporary name (`.<name>.tmp-<pid>`) is for.
fn upload_target(name: &str) -> Option<&str> {
    name.strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(UPLOAD_TEMP_MARK))
        .filter(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .map(|(target, _)| target)
}

/// The key that `key` is the temporary file of an upload to, if it is one
/// (`dir/.name.tmp-<pid>` is an upload to `dir/name`): what a writer killed
/// mid-upload leaves in a [`LocalObjectStore`].
pub fn upload_in_flight_to(key: &str) -> Option<String> {
    let (dir, name) = key.rsplit_once('/').map_or(("", key), |(d, n)| (d, n));
    let target = upload_target(name)?;
    Some(if dir.is_empty() { target.to_owned() } else { format!("{dir}/{target}") })
}

struct LocalUpload {
    key: String,
    temp: PathBuf,
    on_commit: OnCommit,
    file: Option<std::io::BufWriter<File>>,
}

/// What committing a [`LocalUpload`] does with its temporary file.
enum OnCommit {
    /// Renames it to the object's file.
    MoveTo(PathBuf),
    /// Leaves it where it is, for [`HeldUploads::publish`].
    Hold(Arc<Mutex<Vec<HeldFile>>>),
}

impl LocalUpload {
    fn start(key: &str, temp: PathBuf, on_commit: OnCommit) -> Result<Box<dyn ObjectUpload>, StoreError> {
        let file = File::create(&temp).map_err(|e| StoreError::io(key, e))?;
        Ok(Box::new(LocalUpload { key: key.to_owned(), temp, on_commit, file: Some(std::io::BufWriter::new(file)) }))
    }
}

impl Write for LocalUpload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.as_mut().expect("written after commit").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("flushed after commit").flush()
    }
}

impl ObjectUpload for LocalUpload {
    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let file = self.file.take().expect("committed twice");
        let written = file.into_inner().map_err(|e| e.into_error()).and_then(|file| file.sync_data());
        let committed = written.and_then(|()| match &self.on_commit {
            OnCommit::MoveTo(target) => std::fs::rename(&self.temp, target),
            OnCommit::Hold(held) => {
                let mut held = held.lock().unwrap_or_else(PoisonError::into_inner);
                // A key uploaded again is the last upload's, as a store that
                // moves each on commit leaves it.
                release(&mut held, &self.key);
                held.push(HeldFile { key: self.key.clone(), path: std::mem::take(&mut self.temp) });
                Ok(())
            }
        });
        // A commit that failed (a full disk at the last flush) leaves no
        // temporary file, as an upload dropped unfinished does not.
        if committed.is_err() {
            let _ = std::fs::remove_file(&self.temp);
        }
        committed.map_err(|e| StoreError::io(&self.key, e))
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// The folder of a [`LocalObjectStore`] where [`HeldUploads`] keep what
/// they wrote until it is published: outside every table's prefix, and
/// named, as Hive readers skip, with a `_`.
pub const HELD_UPLOADS_DIR: &str = "_held";

/// Numbers held files apart within a process (their names end in its id).
static HELD_FILES: AtomicU64 = AtomicU64::new(0);

/// A committed upload that [`HeldUploads`] keep until published.
struct HeldFile {
    key: String,
    path: PathBuf,
}

/// Removes the held upload of `key`, if any (there is one at most).
fn release(held: &mut Vec<HeldFile>, key: &str) {
    if let Some(i) = held.iter().position(|file| file.key == key) {
        let _ = std::fs::remove_file(held.swap_remove(i).path);
    }
}

/// Uploads to a [`LocalObjectStore`] that appear under their keys together,
/// when [`published`](HeldUploads::publish), or not at all.
///
/// A committed upload waits in [`HELD_UPLOADS_DIR`] under an upload's
/// temporary name, so that nothing of it shows under its key, not even the
/// partition folder it is for. Dropped unpublished, the uploads are removed;
/// a process killed before either leaves files that
/// [`LocalObjectStore::remove_abandoned_uploads`] removes from that folder.
/// Reads (`list`, `head`, `open`) see the store as published.
///
/// `tvetl run` ingests a raw file through these, and publishes only once
/// the file is seen to have held still during its read: a torn read then
/// writes nothing over the files an earlier run wrote for the same version.
pub struct HeldUploads<'s> {
    store: &'s LocalObjectStore,
    held: Arc<Mutex<Vec<HeldFile>>>,
}

impl<'s> HeldUploads<'s> {
    /// Uploads to `store`, held until published.
    pub fn new(store: &'s LocalObjectStore) -> Self {
        HeldUploads { store, held: Arc::default() }
    }

    /// Moves every committed upload to its key, all or none: each is first
    /// put beside its object's file under an upload's temporary name (a
    /// move across file systems, to a lake folder that is another mount or
    /// a link to one, copies it), and only once all are there are they
    /// renamed to their keys (a rename within a folder, which fails only
    /// with the disk). A failure before that shows nothing of them.
    pub fn publish(self) -> Result<(), StoreError> {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        let mut placed: Vec<(PathBuf, PathBuf, &str)> = Vec::with_capacity(held.len());
        let published = held
            .iter()
            .try_for_each(|file| {
                let target = self.store.path(&file.key);
                let beside = upload_temp_beside(&target);
                move_file(&file.path, &beside).map_err(|e| StoreError::io(&file.key, e))?;
                placed.push((beside, target, &file.key));
                Ok(())
            })
            .and_then(|()| {
                placed.iter().try_for_each(|(temp, target, key)| {
                    std::fs::rename(temp, target).map_err(|e| StoreError::io(key, e))
                })
            });
        if published.is_err() {
            // Whatever is still held or placed (a file already moved on is
            // no longer there).
            for path in held.iter().map(|file| &file.path).chain(placed.iter().map(|(temp, _, _)| temp)) {
                let _ = std::fs::remove_file(path);
            }
        }
        published
    }
}

/// Moves the file `from` to `to`, making `to`'s folder: a rename, or a copy
/// (synced) where the two are on different file systems.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let copied = std::fs::copy(from, to).and_then(|_| File::open(to)?.sync_data());
            if copied.is_err() {
                let _ = std::fs::remove_file(to);
            }
            copied.and_then(|()| std::fs::remove_file(from))
        }
        moved => moved,
    }
}

impl Drop for HeldUploads<'_> {
    fn drop(&mut self) {
        for file in self.held.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            let _ = std::fs::remove_file(&file.path);
        }
    }
}

impl ObjectStore for HeldUploads<'_> {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.store.list(prefix)
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.store.head(key)
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        self.store.open(key)
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload + '_>, StoreError> {
        let dir = self.store.path(HELD_UPLOADS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(key, e))?;
        let name = HELD_FILES.fetch_add(1, Ordering::Relaxed).to_string();
        LocalUpload::start(key, dir.join(upload_temp_name(&name)), OnCommit::Hold(self.held.clone()))
    }

    /// Removes the object as published, and any upload of it held.
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        release(&mut self.held.lock().unwrap_or_else(PoisonError::into_inner), key);
        self.store.delete(key)
    }
}

/// A bucket in memory, for tests and benchmarks: versions are content
/// hashes, uploads appear on commit, listing is byte-wise.
#[derive(Debug, Default)]
pub struct MemoryObjectStore {
    objects: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
}

impl MemoryObjectStore {
    /// An empty bucket.
    pub fn new() -> Self {
        Self::default()
    }

    /// A whole object's bytes.
    pub fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().expect("store lock").get(key).cloned()
    }

    fn meta(key: &str, bytes: &[u8]) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: bytes.len() as u64,
            version: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes)),
            last_modified_us: 0,
        }
    }
}

impl ObjectStore for MemoryObjectStore {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let objects = self.objects.lock().expect("store lock");
        Ok(objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Self::meta(k, v))
            .collect())
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let objects = self.objects.lock().expect("store lock");
        objects.get(key).map(|v| Self::meta(key, v)).ok_or_else(|| StoreError::NotFound { key: key.to_owned() })
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        let bytes = self.bytes(key).ok_or_else(|| StoreError::NotFound { key: key.to_owned() })?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload + '_>, StoreError> {
        Ok(Box::new(MemoryUpload { store: self, key: key.to_owned(), bytes: Vec::new() }))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects.lock().expect("store lock").remove(key);
        Ok(())
    }
}

struct MemoryUpload<'s> {
    store: &'s MemoryObjectStore,
    key: String,
    bytes: Vec<u8>,
}

impl Write for MemoryUpload<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ObjectUpload for MemoryUpload<'_> {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.store.objects.lock().expect("store lock").insert(self.key, self.bytes);
        Ok(())
    }
}

/// A [`MemoryObjectStore`] that fails on demand, retryably, the way S3 does
/// once the SDK's retries are spent: commits after a budget of successes,
/// lists and deletes while told to. For tests and failure drills.
#[derive(Debug)]
pub struct FaultyObjectStore {
    /// The objects, as the store holds them.
    pub inner: MemoryObjectStore,
    commits_left: std::sync::atomic::AtomicUsize,
    deletes_fail: std::sync::atomic::AtomicBool,
    lists_fail: std::sync::atomic::AtomicBool,
}

impl Default for FaultyObjectStore {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultyObjectStore {
    /// A store that does not fail until told to.
    pub fn new() -> Self {
        FaultyObjectStore {
            inner: MemoryObjectStore::new(),
            commits_left: std::sync::atomic::AtomicUsize::new(usize::MAX),
            deletes_fail: std::sync::atomic::AtomicBool::new(false),
            lists_fail: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Lets `successes` more uploads commit, then fails every commit.
    pub fn fail_commits_after(&self, successes: usize) {
        self.commits_left.store(successes, std::sync::atomic::Ordering::SeqCst);
    }

    /// Fails every delete while `on`.
    pub fn fail_deletes(&self, on: bool) {
        self.deletes_fail.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Fails every list while `on`.
    pub fn fail_lists(&self, on: bool) {
        self.lists_fail.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops failing.
    pub fn heal(&self) {
        self.fail_commits_after(usize::MAX);
        self.fail_deletes(false);
        self.fail_lists(false);
    }

    fn unavailable(key: &str) -> StoreError {
        let message = "503 Slow Down (after the SDK's retries)".into();
        StoreError::Service { key: key.to_owned(), message, retryable: true }
    }
}

struct FaultyUpload<'s> {
    inner: Box<dyn ObjectUpload + 's>,
    store: &'s FaultyObjectStore,
    key: String,
}

impl Write for FaultyUpload<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectUpload for FaultyUpload<'_> {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let granted = self.store.commits_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            if left == usize::MAX { Some(left) } else { left.checked_sub(1) }
        });
        match granted {
            Ok(_) => self.inner.commit(),
            Err(_) => Err(FaultyObjectStore::unavailable(&self.key)),
        }
    }
}

impl ObjectStore for FaultyObjectStore {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if self.lists_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(FaultyObjectStore::unavailable(prefix));
        }
        self.inner.list(prefix)
    }
    fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.inner.head(key)
    }
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        self.inner.open(key)
    }
    fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload + '_>, StoreError> {
        Ok(Box::new(FaultyUpload { inner: self.inner.create(key)?, store: self, key: key.to_owned() }))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if self.deletes_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(FaultyObjectStore::unavailable(key));
        }
        self.inner.delete(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_appear_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        let mut up = store.create("a/b.txt").unwrap();
        up.write_all(b"hello").unwrap();
        assert!(store.list("a/").unwrap().is_empty());
        up.commit().unwrap();
        let listed = store.list("a/").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "a/b.txt");
        assert_eq!(listed[0].size, 5);

        let mut dropped = store.create("a/c.txt").unwrap();
        dropped.write_all(b"x").unwrap();
        drop(dropped);
        assert_eq!(store.list("").unwrap().len(), 1, "an uncommitted upload leaves nothing");
        assert!(matches!(store.head("a/c.txt"), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn hidden_looking_names_are_objects_and_uploads_in_flight_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        for key in ["v/_late.csv", "v/.early.csv", "v/_incoming/z.csv", "v/a.csv"] {
            store.put(key, b"x").unwrap();
        }
        let _writing = store.create("v/b.csv").unwrap();
        std::fs::write(dir.path().join("v/.c.csv.tmp-77"), b"left by a crash").unwrap();
        let keys: Vec<_> = store.list("v/").unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, ["v/.early.csv", "v/_incoming/z.csv", "v/_late.csv", "v/a.csv"]);
        assert_eq!(store.keys("v/").unwrap(), keys, "keys lists what list does, without the versions");
        assert_eq!(store.keys("v/_").unwrap(), ["v/_incoming/z.csv", "v/_late.csv"]);
        assert!(is_upload_in_flight(".b.csv.tmp-123"));
        assert!(!is_upload_in_flight(".b.csv.tmp-"));
        assert!(!is_upload_in_flight("b.csv.tmp-1"));
        assert!(!is_upload_in_flight(".tmp-notes"));
    }

    #[test]
    fn held_uploads_show_when_published_and_leave_nothing_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        store.put("s/d=1/part-a.parquet", b"earlier").unwrap();
        let keys = ["s/d=1/part-a.parquet", "s/d=2/part-a.parquet", "q/d=1/part-a.jsonl"];
        let write = |held: &HeldUploads| {
            for key in keys {
                held.put(key, format!("now {key}").as_bytes()).unwrap();
            }
            let mut uncommitted = held.create("s/d=3/part-a.parquet").unwrap();
            uncommitted.write_all(b"never committed").unwrap();
        };
        let folders = || ["s/d=2", "s/d=3", "q"].map(|f| dir.path().join(f).exists());
        let bytes = |key: &str| std::fs::read(dir.path().join(key)).unwrap();

        let held = HeldUploads::new(&store);
        write(&held);
        assert_eq!(store.keys("").unwrap(), ["s/d=1/part-a.parquet"], "nothing shows before publishing");
        assert_eq!(bytes("s/d=1/part-a.parquet"), b"earlier");
        assert_eq!(folders(), [false; 3], "not even a folder");
        drop(held);
        assert_eq!(store.keys("").unwrap(), ["s/d=1/part-a.parquet"]);
        assert_eq!(bytes("s/d=1/part-a.parquet"), b"earlier", "a dropped upload leaves the object as it was");
        assert_eq!(folders(), [false; 3]);
        assert!(store.remove_abandoned_uploads(HELD_UPLOADS_DIR).unwrap().is_empty(), "nor a held file");

        let held = HeldUploads::new(&store);
        write(&held);
        held.publish().unwrap();
        let mut published = keys.map(str::to_owned).to_vec();
        published.sort();
        assert_eq!(store.keys("").unwrap(), published);
        for key in keys {
            assert_eq!(bytes(key), format!("now {key}").as_bytes());
        }
        assert!(!dir.path().join("s/d=3").exists(), "an upload never committed is not published");

        // A process killed while it held uploads leaves them as abandoned
        // uploads of the held folder.
        let held = HeldUploads::new(&store);
        held.put("s/d=4/part-a.parquet", b"held").unwrap();
        held.delete("s/d=2/part-a.parquet").unwrap();
        std::mem::forget(held);
        let pid = std::process::id();
        let abandoned = store.remove_abandoned_uploads(HELD_UPLOADS_DIR).unwrap();
        assert!(
            abandoned.len() == 1
                && abandoned[0].starts_with("_held/.")
                && abandoned[0].ends_with(&format!(".tmp-{pid}")),
            "{abandoned:?}"
        );
        assert!(!dir.path().join("s/d=4").exists());
        assert!(!dir.path().join("s/d=2/part-a.parquet").exists(), "delete removes the published object");
    }

    /// A full disk at the upload's last flush (`/dev/full` where its
    /// temporary file goes).
    #[cfg(target_os = "linux")]
    #[test]
    fn an_upload_whose_commit_fails_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        let temp = upload_temp_beside(&dir.path().join("d/a.bin"));
        std::fs::create_dir_all(temp.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/dev/full", &temp).unwrap();
        let err = store.put("d/a.bin", b"bytes").unwrap_err();
        assert!(err.to_string().contains("d/a.bin"), "{err}");
        assert!(std::fs::symlink_metadata(&temp).is_err(), "the temporary file is gone");
        assert_eq!(store.keys("").unwrap(), Vec::<String>::new());
    }

    /// A publish that cannot put one of its uploads in place (here a file
    /// holds the name of its folder) shows none of them, and leaves nothing
    /// behind: the object it would have replaced is as it was.
    #[test]
    fn a_publish_that_fails_shows_none_of_its_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        store.put("s/d=1/part-a.parquet", b"earlier").unwrap();
        store.put("q/blocked", b"a file where a folder would go").unwrap();
        let held = HeldUploads::new(&store);
        for key in ["s/d=1/part-a.parquet", "s/d=2/part-a.parquet", "q/blocked/part-a.jsonl"] {
            held.put(key, b"now").unwrap();
        }
        let err = held.publish().unwrap_err();
        assert!(err.to_string().contains("q/blocked/part-a.jsonl"), "{err}");
        assert_eq!(store.keys("").unwrap(), ["q/blocked", "s/d=1/part-a.parquet"]);
        assert_eq!(std::fs::read(dir.path().join("s/d=1/part-a.parquet")).unwrap(), b"earlier");
        for folder in ["s", "q", HELD_UPLOADS_DIR] {
            assert_eq!(store.remove_abandoned_uploads(folder).unwrap(), Vec::<String>::new(), "left in {folder}");
        }
    }

    /// A lake folder that is a link to another file system (`/dev/shm`'s,
    /// where it is one): what a rename cannot move there is copied.
    #[cfg(unix)]
    #[test]
    fn held_uploads_are_published_into_a_folder_on_another_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("s")).unwrap();
        let store = LocalObjectStore::new(dir.path());
        let held = HeldUploads::new(&store);
        held.put("s/d=1/part-a.parquet", b"now").unwrap();
        held.put("q/part-a.jsonl", b"rejected").unwrap();
        held.publish().unwrap();
        assert_eq!(std::fs::read(elsewhere.path().join("d=1/part-a.parquet")).unwrap(), b"now");
        assert_eq!(store.keys("s/").unwrap(), ["s/d=1/part-a.parquet"]);
        assert_eq!(store.keys("q/").unwrap(), ["q/part-a.jsonl"]);
        for folder in ["s", HELD_UPLOADS_DIR] {
            assert_eq!(store.remove_abandoned_uploads(folder).unwrap(), Vec::<String>::new(), "left in {folder}");
        }
    }

    #[test]
    fn abandoned_uploads_are_removed_and_objects_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        for key in ["s/d=1/part-a.parquet", "s/.hidden.parquet", "q/x.jsonl", "t/keep.csv"] {
            store.put(key, b"x").unwrap();
        }
        // What a writer killed mid-upload leaves: its temporary file, since
        // no drop runs to remove it.
        for key in ["s/d=1/part-b.parquet", "s/d=2/part-a.parquet", "q/y.jsonl", "t/z.csv"] {
            let mut upload = store.create(key).unwrap();
            upload.write_all(b"half").unwrap();
            std::mem::forget(upload);
        }
        let pid = std::process::id();
        assert_eq!(
            store.remove_abandoned_uploads("s").unwrap(),
            [format!("s/d=1/.part-b.parquet.tmp-{pid}"), format!("s/d=2/.part-a.parquet.tmp-{pid}")]
        );
        assert_eq!(store.remove_abandoned_uploads("q").unwrap(), [format!("q/.y.jsonl.tmp-{pid}")]);
        assert!(store.remove_abandoned_uploads("s").unwrap().is_empty(), "nothing is left to remove");
        assert!(store.remove_abandoned_uploads("missing").unwrap().is_empty());
        assert_eq!(store.keys("").unwrap(), ["q/x.jsonl", "s/.hidden.parquet", "s/d=1/part-a.parquet", "t/keep.csv"]);
        assert!(
            dir.path().join(format!("t/.z.csv.tmp-{pid}")).exists(),
            "outside the folders named, nothing is removed"
        );
        assert!(!dir.path().join("s/d=2").exists(), "a folder only the abandoned upload was in goes with it");
        assert!(dir.path().join("s/d=1").is_dir() && dir.path().join("q").is_dir());
    }

    #[test]
    fn a_name_that_is_not_utf8_has_no_key_and_is_listed_apart() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        store.put("v/ok.csv", b"x").unwrap();
        // Two Latin-1 names, which a lossy listing would both call
        // `caf\u{FFFD}.csv`, beside UTF-8 files of that very name and of
        // the escaped spelling of one of them.
        let latin1 = |name: &[u8]| dir.path().join("v").join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(latin1(b"caf\xe9.csv"), b"y").unwrap();
        std::fs::write(latin1(b"caf\xe8.csv"), b"y").unwrap();
        store.put("v/caf\u{FFFD}.csv", b"real").unwrap();
        store.put("v/caf\\xe9.csv", b"backslash").unwrap();
        // A folder whose name is not UTF-8: its files are not walked.
        std::fs::create_dir(latin1(b"d\xe9")).unwrap();
        std::fs::write(latin1(b"d\xe9/inner.csv"), b"z").unwrap();
        let listing = store.listing("v/").unwrap();
        assert_eq!(listing.keys, ["v/caf\\xe9.csv", "v/caf\u{FFFD}.csv", "v/ok.csv"]);
        let mut not_utf8: Vec<(&str, bool)> = listing.not_utf8.iter().map(|n| (n.shown.as_str(), n.folder)).collect();
        not_utf8.sort();
        assert_eq!(not_utf8, [("v/caf\\xe8.csv", false), ("v/caf\\xe9.csv", false), ("v/d\\xe9/", true)]);
        assert!(listing.not_utf8.iter().all(|n| n.reason().contains("is not valid UTF-8")));
        assert_eq!(store.keys("v/").unwrap(), listing.keys);
        assert_eq!(store.head("v/caf\u{FFFD}.csv").unwrap().size, 4, "each UTF-8 file is itself");
        assert_eq!(store.head("v/caf\\xe9.csv").unwrap().size, 9);
        assert!(store.listing("w/").unwrap().not_utf8.is_empty(), "another prefix's");
    }

    #[test]
    fn a_named_pipe_fails_at_once_instead_of_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        store.put("v/ok.csv", b"x").unwrap();
        let fifo = dir.path().join("v/pipe.csv");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        assert_eq!(store.keys("v/").unwrap(), ["v/ok.csv", "v/pipe.csv"]);
        let error = store.head("v/pipe.csv").unwrap_err().to_string();
        assert!(error.starts_with("v/pipe.csv") && error.contains("not a regular file"), "{error}");
    }

    #[test]
    fn a_folder_this_program_does_not_write_lists_names_like_its_uploads_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        for name in ["v/ok.csv".to_owned(), format!("v/.a.csv.tmp-{pid}"), "v/.batch.tmp-7/b.csv".to_owned()] {
            std::fs::create_dir_all(dir.path().join(&name).parent().unwrap()).unwrap();
            std::fs::write(dir.path().join(&name), b"x").unwrap();
        }
        let lake = LocalObjectStore::new(dir.path());
        assert_eq!(lake.keys("v/").unwrap(), ["v/ok.csv"], "its own uploads in flight are not objects");
        let input = LocalObjectStore::new(dir.path()).listing_every_file();
        assert_eq!(
            input.keys("v/").unwrap(),
            [format!("v/.a.csv.tmp-{pid}"), "v/.batch.tmp-7/b.csv".into(), "v/ok.csv".into()]
        );
        assert_eq!(input.head("v/.batch.tmp-7/b.csv").unwrap().size, 1);
    }

    #[test]
    fn an_s3_version_id_is_named_beside_its_etag_and_upload_time_and_read_back_from_the_name() {
        // 2024-01-01T10:00:00.9Z: a listing's time has milliseconds, a head's
        // whole seconds; both name the version alike.
        let uploaded_us = 1_704_103_200_900_000;
        let (etag, id) = ("9b2cf535f27731c974343645a3985328", "3HL4kqtJlcpX+mJ/rmSp_Xd3");
        let named = ObjectMeta::version_with_id(etag, id, uploaded_us);
        assert_eq!(named, format!("20240101T100000Z_{etag}@{id}"));
        assert_eq!(named, ObjectMeta::version_with_id(etag, id, 1_704_103_200_000_000));
        assert_eq!(ObjectMeta::version_parts(&named), (etag, Some(id)));
        // A version id may hold the marks itself: the ETag before them cannot.
        let marked = ObjectMeta::version_with_id("d41d8cd98f00b204e9800998ecf8427e-2", "a@b_c", uploaded_us);
        assert_eq!(ObjectMeta::version_parts(&marked), ("d41d8cd98f00b204e9800998ecf8427e-2", Some("a@b_c")));
        // No version id of its own: the ETag alone, which names no id.
        for none in ["null", ""] {
            assert_eq!(ObjectMeta::version_with_id("9b2c", none, uploaded_us), "9b2c");
        }
        assert_eq!(ObjectMeta::version_parts("9b2c"), ("9b2c", None));
        assert_eq!(ObjectMeta::version_parts(""), ("", None));
        // Never taken for a stream batch's version.
        assert_eq!(crate::stream::delivery(&named), named);
    }

    #[test]
    fn the_versions_of_one_key_sort_by_upload_whatever_their_etags_and_ids() {
        // Uploads a second apart, across a minute, a day and a year, whose
        // ETags and ids sort the other way.
        let uploads = [
            (1_704_067_199_000_000, "ffff", "zz"), // 2023-12-31T23:59:59Z
            (1_704_067_200_000_000, "eeee", "yy"),
            (1_704_067_260_000_000, "dddd", "xx"),
            (1_704_153_600_000_000, "cccc", "ww"),
            (1_735_689_600_000_000, "0000", "aa"), // 2025-01-01T00:00:00Z
        ];
        let names: Vec<String> =
            uploads.iter().map(|&(uploaded_us, etag, id)| ObjectMeta::version_with_id(etag, id, uploaded_us)).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    }

    #[test]
    fn versions_follow_content_and_listing_is_bytewise() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjectStore::new(dir.path());
        store.put("p/b", b"1").unwrap();
        store.put("p/a b", b"1").unwrap();
        store.put("p/B", b"2").unwrap();
        let keys: Vec<_> = store.list("p/").unwrap().into_iter().map(|m| (m.key, m.version)).collect();
        assert_eq!(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(), ["p/B", "p/a b", "p/b"]);
        assert_eq!(keys[1].1, keys[2].1);
        assert_ne!(keys[0].1, keys[1].1);
    }
}
