//! What earlier runs ingested into a lake, so that a run reads only the raw
//! files that are new or changed since.
//!
//! A scheduled `tvetl run` over a folder that files keep landing in (an
//! SFTP drop) sees every earlier day's files again. Ingesting one of them
//! again would write the same lake files, whose names and bytes derive from
//! the object and its content, at the cost of decoding it all again: a run
//! would cost what the folder holds, not what is new in it. So a run skips
//! an object that this lake's manifest says it ingested before, when
//!
//! - the object is the same: the same size, modification time and inode
//!   change time, or else the same content hash (a copied or touched file).
//!   The change time is what tells a file rewritten and given its old
//!   modification time back (`touch -d`, `cp -p`, an archive extracted
//!   again) from the file it replaced; no tool can set it. As git does with
//!   its index, times are trusted only if older than the manifest by more
//!   than [`RACY_SECONDS`]: a file that changed again, to the same size,
//!   within one tick of a coarse clock (FAT keeps 2 s) after it was read
//!   would keep its time, so such a file is hashed instead;
//! - the same build of tvetl, with the same ingest options, ingested it (a
//!   new build may stage or quarantine differently); and
//! - what that ingest wrote (its staging files and quarantine file) is still
//!   in the lake, at the sizes it wrote them.
//!
//! The run then reports the counts that ingest recorded, so its counts stay
//! those of every file in its input. An object whose bytes could not be
//! decoded (not gzip, truncated) is recorded too, with its error and its
//! quarantine record: the same bytes fail the same way, so the run reports
//! that error again without reading it. Other failures (a file that could
//! not be opened) are not recorded, and are tried again. The warehouse load still counts the
//! skipped files' event ids in the run's duplicates, without staging their
//! rows where its ledger has loaded them (`DuckDbWarehouse::load_copies`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tvetl_core::ingest::{IngestOptions, IngestReport};
use tvetl_core::store::{FileStamp, LocalObjectStore, ObjectStore, replace_file};

/// `LAKE/_warehouse/ingested.json`: with the local warehouse and the run
/// lock, among the runner's own records, not the lake's objects (a rerun
/// over copies of the same files records their new times).
pub fn manifest_path(lake: &Path) -> PathBuf {
    lake.join("_warehouse").join("ingested.json")
}

/// One raw object as it was ingested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestedObject {
    /// The object's file when it was ingested.
    pub stamp: FileStamp,
    /// Its version (content hash), from which the lake files' names derive.
    pub version: String,
    /// What ingesting it did.
    pub report: IngestReport,
    /// The size of each file it wrote ([`IngestReport::written_keys`]), as
    /// written: a file cut short or grown since (a disk that failed, a hand
    /// that edited it) is not what the ingest wrote, and the object is read
    /// again. Other bytes of the same size go unseen.
    #[serde(default)]
    pub written_bytes: BTreeMap<String, u64>,
}

impl IngestedObject {
    /// The entry for an object version just ingested, whose files are in
    /// the lake at `lake_root` (those whose size cannot be taken have none
    /// recorded, and only their presence is checked).
    pub fn written(stamp: FileStamp, version: String, report: IngestReport, lake_root: &Path) -> IngestedObject {
        let written_bytes =
            report.written_keys().filter_map(|key| Some((key.clone(), written_size(lake_root, key)?))).collect();
        IngestedObject { stamp, version, report, written_bytes }
    }

    /// Whether every file the ingest wrote is in the lake at `lake_root`,
    /// at the size it was written.
    fn outputs_in(&self, lake_root: &Path) -> bool {
        self.report.written_keys().all(|key| still_written(lake_root, key, self.written_bytes.get(key).copied()))
    }
}

/// The size of the lake's file `key` as just written, to be checked by
/// [`IngestManifest::unchanged`] (none if it cannot be taken).
pub fn written_size(lake_root: &Path, key: &str) -> Option<u64> {
    std::fs::metadata(lake_root.join(key)).ok().map(|file| file.len())
}

/// Whether the lake at `lake_root` holds the file `key`, at the size it was
/// `written` if that was recorded.
fn still_written(lake_root: &Path, key: &str, written: Option<u64>) -> bool {
    std::fs::metadata(lake_root.join(key))
        .is_ok_and(|file| file.is_file() && written.is_none_or(|written| written == file.len()))
}

/// A raw object whose bytes could not be decoded, as a run found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableObject {
    /// The object's file when it was read.
    pub stamp: FileStamp,
    /// Its version (content hash).
    pub version: String,
    /// The run's error for it.
    pub error: String,
    /// The quarantine record of it.
    pub quarantine_key: String,
    /// The record's size as written (see [`IngestedObject::written_bytes`]).
    #[serde(default)]
    pub quarantine_bytes: Option<u64>,
}

/// The manifest file: which build ingested the objects, each object by its
/// key (sorted, so that the same objects give the same bytes), and the
/// unreadable ones. Generic so that a run writes the objects it holds
/// without copying them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ManifestFile<I, O, U> {
    ingester: I,
    objects: O,
    /// Absent from the manifests of builds before it: such a manifest is
    /// another build's, whose objects are dropped, not an unreadable file.
    #[serde(default)]
    unreadable: U,
}

/// How much older than the manifest a file's modification time must be for
/// the time alone to vouch for its content.
pub const RACY_SECONDS: i64 = 3;

/// The objects earlier runs ingested into a lake with this build of tvetl.
#[derive(Debug, Default)]
pub struct IngestManifest {
    earlier: BTreeMap<String, IngestedObject>,
    unreadable: BTreeMap<String, UnreadableObject>,
    /// When the manifest was written, UTC microseconds.
    written_us: i64,
}

impl IngestManifest {
    /// Nothing ingested before: every object is read.
    pub fn empty() -> IngestManifest {
        IngestManifest::default()
    }

    /// The manifest at `path`, keeping its objects only if `ingester` wrote
    /// them. A missing file is an empty manifest; so is one that cannot be
    /// read, with the reason as the error (the run says so and reads every
    /// object: nothing is lost but time).
    pub fn load(path: &Path, ingester: &str) -> Result<IngestManifest, String> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IngestManifest::empty()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let file: ManifestFile<String, BTreeMap<String, IngestedObject>, BTreeMap<String, UnreadableObject>> =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if file.ingester != ingester {
            return Ok(IngestManifest::empty());
        }
        let written =
            std::fs::metadata(path).and_then(|m| m.modified()).map_err(|e| format!("{}: {e}", path.display()))?;
        let written_us = written.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
        Ok(IngestManifest { earlier: file.objects, unreadable: file.unreadable, written_us })
    }

    /// What an earlier run recorded of ingesting `key`, whatever the file
    /// is now.
    pub fn earlier(&self, key: &str) -> Option<&IngestedObject> {
        self.earlier.get(key)
    }

    /// How `key` was ingested before, if the raw object (whose file's stamp
    /// is now `stamp`) is unchanged since and what that ingest wrote is all
    /// still in the lake at `lake_root`, at the sizes it wrote.
    /// An object of the same size whose time is new, or too recent to vouch
    /// for it, is read for its content hash; the entry returned then
    /// carries its time now.
    pub fn unchanged(
        &self,
        raw: &LocalObjectStore,
        key: &str,
        stamp: FileStamp,
        lake_root: &Path,
    ) -> Option<IngestedObject> {
        let earlier = self.earlier.get(key)?;
        if !self.same_object(raw, key, stamp, earlier.stamp, &earlier.version) {
            return None;
        }
        if !earlier.outputs_in(lake_root) {
            return None;
        }
        Some(IngestedObject { stamp, ..earlier.clone() })
    }

    /// How `key` failed before, if an earlier run found its bytes
    /// unreadable, the object (whose file's stamp is now `stamp`) is
    /// unchanged since, and its quarantine record is still in the lake at
    /// `lake_root`, at its size; as [`IngestManifest::unchanged`] judges an object.
    pub fn unchanged_unreadable(
        &self,
        raw: &LocalObjectStore,
        key: &str,
        stamp: FileStamp,
        lake_root: &Path,
    ) -> Option<UnreadableObject> {
        let earlier = self.unreadable.get(key)?;
        let same = self.same_object(raw, key, stamp, earlier.stamp, &earlier.version);
        (same && still_written(lake_root, &earlier.quarantine_key, earlier.quarantine_bytes))
            .then(|| UnreadableObject { stamp, ..earlier.clone() })
    }

    /// Whether `key`, whose file's stamp is now `stamp`, is the object that
    /// had `earlier` stamp and `version`: the same stamp, settled before
    /// the manifest was written, or else the same size and content hash.
    fn same_object(
        &self,
        raw: &LocalObjectStore,
        key: &str,
        stamp: FileStamp,
        earlier: FileStamp,
        version: &str,
    ) -> bool {
        // A time of 0 is no time (a file system that keeps none).
        let settled = stamp.last_modified_us > 0 && stamp.latest_us() < self.written_us - RACY_SECONDS * 1_000_000;
        if stamp == earlier && settled {
            return true;
        }
        stamp.size == earlier.size && raw.head(key).is_ok_and(|object| object.version == version)
    }

    /// Writes the manifest of one run's ingested `objects` and `unreadable`
    /// ones to `path`: whole or not at all. Objects of earlier runs that are
    /// not among them are dropped, so it holds what the last run's input
    /// held.
    pub fn save(
        path: &Path,
        ingester: &str,
        objects: &BTreeMap<String, IngestedObject>,
        unreadable: &BTreeMap<String, UnreadableObject>,
    ) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&ManifestFile { ingester, objects, unreadable })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        replace_file(path, &bytes)
    }
}

/// Names this build of tvetl and its ingest options: the running
/// executable's size and modification time, so that any rebuild (which may
/// stage or quarantine differently) reads every object again once. (Its
/// content hash would cost 0.09 CPU s a run for a debug build's 111 MB, as
/// much again as a run of one small file.) `None` when the executable
/// cannot be found: then nothing is skipped.
pub fn ingester_fingerprint(options: &IngestOptions) -> Option<String> {
    let exe = std::fs::metadata(std::env::current_exe().ok()?).ok()?;
    let FileStamp { size, last_modified_us, .. } = FileStamp::of(&exe);
    Some(format!("tvetl {} {size} {last_modified_us} {options:?}", env!("CARGO_PKG_VERSION")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvetl_core::ingest::RecordCounts;
    use tvetl_core::source::Source;
    use tvetl_core::staging::WrittenFile;

    use std::time::{Duration, SystemTime};

    /// A raw folder with one object and a lake holding what ingesting it
    /// wrote, and the manifest entry for it.
    fn ingested(dir: &Path) -> (LocalObjectStore, PathBuf, IngestedObject) {
        let raw_root = dir.join("raw");
        let lake = dir.join("lake");
        std::fs::create_dir_all(raw_root.join("viewership")).unwrap();
        std::fs::write(raw_root.join("viewership/a.csv"), "some,bytes\n").unwrap();
        set_time(&raw_root.join("viewership/a.csv"), SystemTime::now() - Duration::from_secs(3600));
        let staged = "staging/viewership/event_date=2024-01-01/part-1.parquet";
        std::fs::create_dir_all(lake.join(staged).parent().unwrap()).unwrap();
        std::fs::write(lake.join(staged), "parquet").unwrap();
        let raw = LocalObjectStore::new(&raw_root);
        let stamp = raw.stamp("viewership/a.csv").unwrap();
        let version = raw.head("viewership/a.csv").unwrap().version;
        let report = IngestReport {
            key: "viewership/a.csv".into(),
            source: Source::Viewership,
            counts: RecordCounts { rows_read: 1, rows_accepted: 1, ..Default::default() },
            staged: vec![WrittenFile { key: staged.into(), partition: Some("2024-01-01".into()), rows: 1 }],
            quarantine_key: None,
            unknown_columns: vec![],
            more_unknown_columns: false,
        };
        (raw, lake.clone(), IngestedObject::written(stamp, version, report, &lake))
    }

    /// What the run asks: with the file's stamp now, or none for no file.
    fn unchanged(manifest: &IngestManifest, raw: &LocalObjectStore, key: &str, lake: &Path) -> Option<IngestedObject> {
        manifest.unchanged(raw, key, raw.stamp(key).ok()?, lake)
    }

    fn set_time(file: &Path, time: SystemTime) {
        std::fs::File::options().write(true).open(file).unwrap().set_modified(time).unwrap();
    }

    /// [`ingested`] with the raw file's time set to `time` first, and a
    /// manifest of it written by "build 1".
    fn ingested_at(dir: &Path, time: SystemTime) -> (LocalObjectStore, PathBuf, IngestedObject, IngestManifest) {
        let (raw, lake, mut entry) = ingested(dir);
        set_time(&dir.join("raw/viewership/a.csv"), time);
        entry.stamp = raw.stamp("viewership/a.csv").unwrap();
        let manifest = manifest_of(&entry, dir, "build 1");
        (raw, lake, entry, manifest)
    }

    /// Other bytes of the same size in `file`, at `time` again.
    fn rewrite_keeping_stamp(file: &Path, time: SystemTime) {
        std::fs::write(file, "some,BYTES\n").unwrap();
        set_time(file, time);
    }

    fn manifest_of(entry: &IngestedObject, dir: &Path, ingester: &str) -> IngestManifest {
        let path = manifest_path(&dir.join("lake"));
        let objects = BTreeMap::from([(entry.report.key.clone(), entry.clone())]);
        IngestManifest::save(&path, ingester, &objects, &BTreeMap::new()).unwrap();
        IngestManifest::load(&path, "build 1").unwrap()
    }

    /// A full disk (`/dev/full`, where the temporary file is written).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_manifest_that_cannot_be_saved_leaves_the_one_before_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, entry) = ingested(dir.path());
        let before = manifest_of(&entry, dir.path(), "build 1");
        let path = manifest_path(&dir.path().join("lake"));
        let temp = path.with_extension("json.tmp");
        std::os::unix::fs::symlink("/dev/full", &temp).unwrap();
        let err = IngestManifest::save(&path, "build 1", &BTreeMap::new(), &BTreeMap::new()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
        assert!(std::fs::symlink_metadata(&temp).is_err(), "the temporary file is gone");
        assert_eq!(IngestManifest::load(&path, "build 1").unwrap().earlier, before.earlier);
    }

    #[test]
    fn an_unchanged_object_whose_outputs_are_there_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, lake, entry) = ingested(dir.path());
        let manifest = manifest_of(&entry, dir.path(), "build 1");
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), Some(entry));
        std::fs::write(dir.path().join("raw/viewership/b.csv"), "other,bytes\n").unwrap();
        assert_eq!(unchanged(&manifest, &raw, "viewership/b.csv", &lake), None, "never ingested");
    }

    #[test]
    fn another_build_or_a_corrupt_manifest_reads_everything_again() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, lake, entry) = ingested(dir.path());
        assert_eq!(unchanged(&manifest_of(&entry, dir.path(), "build 0"), &raw, "viewership/a.csv", &lake), None);
        let path = manifest_path(&lake);
        std::fs::write(&path, "{ not json").unwrap();
        let error = IngestManifest::load(&path, "build 1").unwrap_err();
        assert!(error.contains("ingested.json"), "{error}");
    }

    #[test]
    fn changed_content_or_missing_outputs_read_the_object_again() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, lake, entry) = ingested(dir.path());
        let manifest = manifest_of(&entry, dir.path(), "build 1");
        let file = dir.path().join("raw/viewership/a.csv");
        let set_time = |time| set_time(&file, time);

        // The same size at another time: read for its hash, which is the same.
        let later = SystemTime::now() + Duration::from_secs(60);
        set_time(later);
        let touched = unchanged(&manifest, &raw, "viewership/a.csv", &lake).expect("same content");
        assert_ne!(touched.stamp, entry.stamp, "the entry takes the new time");
        assert_eq!((&touched.version, &touched.report), (&entry.version, &entry.report));

        // New content of the same size at another time is read again.
        std::fs::write(&file, "some,BYTES\n").unwrap();
        set_time(later + Duration::from_secs(60));
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None, "new content");
        std::fs::write(&file, "more,bytes,\n").unwrap();
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None, "another size");

        std::fs::write(&file, "some,bytes\n").unwrap();
        let staged = lake.join(&entry.report.staged[0].key);
        assert_eq!(entry.written_bytes[&entry.report.staged[0].key], 7, "{entry:?}");
        std::fs::write(&staged, "parq").unwrap();
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None, "a staging file cut short");
        std::fs::write(&staged, "parquet, and more").unwrap();
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None, "a staging file grown");
        std::fs::write(&staged, "PARQUET").unwrap();
        assert!(unchanged(&manifest, &raw, "viewership/a.csv", &lake).is_some(), "other bytes of the same size");
        std::fs::remove_file(&staged).unwrap();
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None, "a staging file is gone");
    }

    #[test]
    fn a_time_too_close_to_the_manifests_does_not_vouch_for_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (raw, lake, entry, manifest) = ingested_at(dir.path(), now);
        let file = dir.path().join("raw/viewership/a.csv");

        // Changed again within one tick of a coarse clock: same size, same time.
        rewrite_keeping_stamp(&file, now);
        let stamp = raw.stamp("viewership/a.csv").unwrap();
        assert_eq!((stamp.size, stamp.last_modified_us), (entry.stamp.size, entry.stamp.last_modified_us));
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None);
        // The same content then is read for its hash, and skipped; the
        // entry takes the file's stamp now (its change time is new).
        std::fs::write(&file, "some,bytes\n").unwrap();
        set_time(&file, now);
        let stamp = raw.stamp("viewership/a.csv").unwrap();
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), Some(IngestedObject { stamp, ..entry }));
    }

    #[test]
    fn an_unreadable_object_is_not_read_again_while_it_and_its_quarantine_record_stay() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, lake, entry) = ingested(dir.path());
        let record = "quarantine/viewership/ingest_date=2024-01-01/a.csv-unreadable.jsonl";
        std::fs::create_dir_all(lake.join(record).parent().unwrap()).unwrap();
        std::fs::write(lake.join(record), "{}\n").unwrap();
        let failed = UnreadableObject {
            stamp: entry.stamp,
            version: entry.version.clone(),
            error: "viewership/a.csv: truncated".into(),
            quarantine_key: record.into(),
            quarantine_bytes: Some(3),
        };
        let path = manifest_path(&lake);
        let unreadable = BTreeMap::from([("viewership/a.csv".to_owned(), failed.clone())]);
        IngestManifest::save(&path, "build 1", &BTreeMap::new(), &unreadable).unwrap();
        let manifest = IngestManifest::load(&path, "build 1").unwrap();
        let ask = |manifest: &IngestManifest| {
            manifest.unchanged_unreadable(&raw, "viewership/a.csv", raw.stamp("viewership/a.csv").unwrap(), &lake)
        };
        assert_eq!(ask(&manifest), Some(failed.clone()));
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None, "not an ingested object");
        assert_eq!(ask(&IngestManifest::load(&path, "build 2").unwrap()), None, "another build");

        // New content of another size is read again; so is the same file
        // once its quarantine record is gone.
        let file = dir.path().join("raw/viewership/a.csv");
        std::fs::write(&file, "now,readable,bytes\n").unwrap();
        assert_eq!(ask(&manifest), None, "new content");
        std::fs::write(&file, "some,bytes\n").unwrap();
        set_time(&file, SystemTime::now() - Duration::from_secs(3600));
        assert_eq!(ask(&manifest).map(|f| f.error), Some(failed.error), "the same bytes, hashed");
        std::fs::write(lake.join(record), "{}\n{}\n").unwrap();
        assert_eq!(ask(&manifest), None, "the quarantine record grown");
        std::fs::write(lake.join(record), "{").unwrap();
        assert_eq!(ask(&manifest), None, "the quarantine record cut short");
        std::fs::remove_file(lake.join(record)).unwrap();
        assert_eq!(ask(&manifest), None, "the quarantine record is gone");
    }

    #[test]
    fn an_earlier_builds_manifest_without_unreadable_objects_is_anothers_not_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, lake, entry) = ingested(dir.path());
        let path = manifest_path(&lake);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let objects = serde_json::json!({ entry.report.key.clone(): entry });
        std::fs::write(&path, serde_json::json!({ "ingester": "build 0", "objects": objects }).to_string()).unwrap();
        let manifest = IngestManifest::load(&path, "build 1").expect("read, not reported unreadable");
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None, "another build's");
    }

    #[test]
    fn a_file_rewritten_and_given_its_old_time_back_is_read_again() {
        // As `touch -d`, `cp -p` or an archive extracted again leave a
        // corrected file of the same size: only the change time tells.
        let dir = tempfile::tempdir().unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let (raw, lake, entry, _) = ingested_at(dir.path(), long_ago);
        // The manifest as written once the file's change time has settled.
        let settled_after = |stamp: FileStamp| stamp.latest_us() + (RACY_SECONDS + 1) * 1_000_000;
        let manifest =
            IngestManifest { written_us: settled_after(entry.stamp), ..manifest_of(&entry, dir.path(), "build 1") };
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), Some(entry.clone()), "settled and unchanged");

        // The kernel's file clock ticks every few milliseconds: rewritten
        // until the change time moves (on the first try, unless it is coarse).
        let mut stamp = entry.stamp;
        for _ in 0..300 {
            std::thread::sleep(Duration::from_millis(10));
            rewrite_keeping_stamp(&dir.path().join("raw/viewership/a.csv"), long_ago);
            stamp = raw.stamp("viewership/a.csv").unwrap();
            if stamp.changed_us != entry.stamp.changed_us {
                break;
            }
        }
        assert_eq!((stamp.size, stamp.last_modified_us), (entry.stamp.size, entry.stamp.last_modified_us));
        assert_ne!(stamp.changed_us, entry.stamp.changed_us);
        let manifest = IngestManifest { written_us: settled_after(stamp), ..manifest };
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None, "new content");
    }

    #[test]
    fn no_time_does_not_vouch_for_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, lake, entry, manifest) = ingested_at(dir.path(), std::time::UNIX_EPOCH);
        assert_eq!(entry.stamp.last_modified_us, 0);
        rewrite_keeping_stamp(&dir.path().join("raw/viewership/a.csv"), std::time::UNIX_EPOCH);
        assert_eq!(unchanged(&manifest, &raw, "viewership/a.csv", &lake), None);
    }
}
