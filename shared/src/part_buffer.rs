//! Bytes of multipart uploads waiting to go out as parts, in memory up to a
//! budget shared by all the uploads of one store, and in temporary files
//! beyond it.
//!
//! An upload sends a part only once it holds a part's worth of bytes (S3
//! wants at least 5 MiB for every part but the last). The staging writer has
//! one upload open per day partition, so an object spanning a year holds up
//! to 365 parts in the making: 2.9 GB at 8 MiB each, whatever bounds the
//! writer keeps on its rows and row groups. [`UploadMemory`] caps what they
//! hold together; a [`PartBuffer`] that would go over it moves its bytes to a
//! temporary file and keeps appending there until its part goes out.
//!
//! ```
//! use std::sync::Arc;
//! use tvetl_core::part_buffer::{PartBuffer, UploadMemory};
//!
//! let memory = Arc::new(UploadMemory::new(1024, std::env::temp_dir()));
//! let mut a = PartBuffer::new(memory.clone(), 4096);
//! let mut b = PartBuffer::new(memory.clone(), 4096);
//! a.write(&[1; 1000]).unwrap();
//! b.write(&[2; 1000]).unwrap(); // over the shared budget: b spills to a file
//! assert!(!a.is_spilled() && b.is_spilled());
//! assert!(memory.used() <= 1024);
//! b.write(&[3; 3096]).unwrap();
//! let part = b.take_part().unwrap().expect("a whole part is ready");
//! assert_eq!(part.len(), 4096);
//! assert_eq!(a.take_rest().unwrap(), vec![1; 1000]);
//! ```

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the [`PartBuffer`]s of one store may hold in memory together, and
/// where they spill beyond it.
#[derive(Debug)]
pub struct UploadMemory {
    limit: usize,
    used: AtomicUsize,
    spills: AtomicUsize,
    spill_dir: PathBuf,
}

impl UploadMemory {
    /// A budget of `limit` bytes; spilled parts go to files in `spill_dir`
    /// (created and removed by the buffers, invisible to other processes).
    pub fn new(limit: usize, spill_dir: impl Into<PathBuf>) -> Self {
        UploadMemory { limit, used: AtomicUsize::new(0), spills: AtomicUsize::new(0), spill_dir: spill_dir.into() }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes the buffers hold in memory now (their allocated capacity).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// How many times a buffer has moved to a temporary file.
    pub fn spills(&self) -> usize {
        self.spills.load(Ordering::Relaxed)
    }

    /// Counts `extra` more bytes if they fit in the budget.
    fn try_reserve(&self, extra: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(extra).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The bytes of one upload's next part: in memory while the shared budget
/// allows, else in a temporary file (removed when the buffer is dropped, or
/// by the system if the process dies).
#[derive(Debug)]
pub struct PartBuffer {
    memory: Arc<UploadMemory>,
    part_size: usize,
    /// In memory; its capacity is what is counted in `memory`.
    held: Vec<u8>,
    /// The file the bytes go to once spilled. All of the part's bytes are in
    /// exactly one place: `held` or, once spilled, the file.
    spill: Option<Spill>,
}

#[derive(Debug)]
struct Spill {
    file: File,
    len: usize,
}

impl PartBuffer {
    /// An empty buffer whose parts are `part_size` bytes or more.
    pub fn new(memory: Arc<UploadMemory>, part_size: usize) -> Self {
        PartBuffer { memory, part_size: part_size.max(1), held: Vec::new(), spill: None }
    }

    /// The bytes buffered.
    pub fn len(&self) -> usize {
        self.spill.as_ref().map_or(self.held.len(), |s| s.len)
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the buffered bytes are in a temporary file.
    pub fn is_spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Appends `bytes`, spilling to a file if memory would go over budget.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(spill) = &mut self.spill {
            spill.file.write_all(bytes)?;
            spill.len += bytes.len();
            return Ok(());
        }
        let (needed, capacity) = (self.held.len() + bytes.len(), self.held.capacity());
        if needed > capacity {
            // Double as a Vec would, up to a part, but at least what is needed
            // and only within the budget.
            let wanted = (capacity * 2).clamp(needed, needed.max(self.part_size)) - capacity;
            if !self.memory.try_reserve(wanted) {
                return self.spill_with(bytes);
            }
            self.held.reserve_exact(capacity + wanted - self.held.len());
            // Should the allocator give more than asked, count it too.
            let extra = self.held.capacity() - capacity - wanted;
            self.memory.used.fetch_add(extra, Ordering::Relaxed);
        }
        self.held.extend_from_slice(bytes);
        Ok(())
    }

    fn spill_with(&mut self, bytes: &[u8]) -> io::Result<()> {
        let dir = &self.memory.spill_dir;
        let mut file = tempfile::tempfile_in(dir).map_err(|e| {
            io::Error::new(e.kind(), format!("spilling an upload's part to a temporary file in {}: {e}", dir.display()))
        })?;
        file.write_all(&self.held)?;
        file.write_all(bytes)?;
        let len = self.held.len() + bytes.len();
        self.free_held();
        self.spill = Some(Spill { file, len });
        self.memory.spills.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn free_held(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.memory.release(held.capacity());
        held
    }

    /// The buffered bytes as one part, if they make a whole one; the buffer
    /// is then empty, and its next bytes go to memory again if they fit.
    pub fn take_part(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.len() < self.part_size { Ok(None) } else { self.take_rest().map(Some) }
    }

    /// Everything buffered, however little (the last part, or a whole small
    /// object); the buffer is then empty.
    pub fn take_rest(&mut self) -> io::Result<Vec<u8>> {
        match self.spill.take() {
            None => Ok(self.free_held()),
            Some(mut spill) => {
                // A part read back is in memory only while it is sent.
                let mut part = Vec::with_capacity(spill.len);
                spill.file.seek(SeekFrom::Start(0))?;
                (&mut spill.file).take(spill.len as u64).read_to_end(&mut part)?;
                if part.len() != spill.len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("a spilled upload part came back with {} of its {} bytes", part.len(), spill.len),
                    ));
                }
                Ok(part)
            }
        }
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        self.free_held();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(limit: usize, dir: &std::path::Path) -> Arc<UploadMemory> {
        Arc::new(UploadMemory::new(limit, dir))
    }

    /// Deterministic bytes that differ from write to write.
    fn chunk(seed: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8).collect()
    }

    #[test]
    fn under_the_budget_parts_stay_in_memory_and_come_out_whole() {
        let dir = tempfile::tempdir().unwrap();
        let memory = memory(1 << 20, dir.path());
        let mut buffer = PartBuffer::new(memory.clone(), 1000);
        let mut written = Vec::new();
        let mut sent = Vec::new();
        for i in 0..50 {
            let c = chunk(i, 97);
            buffer.write(&c).unwrap();
            written.extend_from_slice(&c);
            assert!(!buffer.is_spilled());
            if let Some(part) = buffer.take_part().unwrap() {
                assert!(part.len() >= 1000, "a part is a whole part: {}", part.len());
                sent.extend_from_slice(&part);
                assert!(buffer.is_empty());
            }
        }
        assert!(buffer.take_part().unwrap().is_none(), "what is left is less than a part");
        sent.extend_from_slice(&buffer.take_rest().unwrap());
        assert_eq!(sent, written);
        assert_eq!(memory.used(), 0, "an empty buffer holds nothing");
    }

    #[test]
    fn many_buffers_share_one_budget_and_lose_no_byte() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 16 * 1024;
        let memory = memory(limit, dir.path());
        let mut buffers: Vec<PartBuffer> = (0..40).map(|_| PartBuffer::new(memory.clone(), 8 * 1024)).collect();
        let mut written = vec![Vec::new(); buffers.len()];
        let mut sent = vec![Vec::new(); buffers.len()];
        let mut spilled = 0;
        // Uneven writes to every buffer in turn, as day partitions get them.
        for round in 0..60 {
            for (i, buffer) in buffers.iter_mut().enumerate() {
                let c = chunk(round * 100 + i, 50 + (i * 37 + round * 11) % 400);
                buffer.write(&c).unwrap();
                written[i].extend_from_slice(&c);
                spilled += usize::from(buffer.is_spilled());
                assert!(memory.used() <= limit, "{} bytes in memory over a budget of {limit}", memory.used());
                if let Some(part) = buffer.take_part().unwrap() {
                    sent[i].extend_from_slice(&part);
                }
            }
        }
        assert!(spilled > 0, "40 buffers of up to 8 KiB each cannot all stay within 16 KiB");
        assert!(memory.spills() > 0);
        for (i, buffer) in buffers.iter_mut().enumerate() {
            sent[i].extend_from_slice(&buffer.take_rest().unwrap());
            assert_eq!(sent[i], written[i], "buffer {i} gave back other bytes");
        }
        drop(buffers);
        assert_eq!(memory.used(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no spill file is left behind");
    }

    #[test]
    fn without_the_budget_the_same_buffers_hold_far_more() {
        let dir = tempfile::tempdir().unwrap();
        let memory = memory(usize::MAX, dir.path());
        let mut buffers: Vec<PartBuffer> = (0..40).map(|_| PartBuffer::new(memory.clone(), 8 * 1024)).collect();
        for buffer in &mut buffers {
            buffer.write(&chunk(1, 6 * 1024)).unwrap();
        }
        assert!(buffers.iter().all(|b| !b.is_spilled()));
        assert_eq!(memory.spills(), 0);
        assert!(memory.used() >= 40 * 6 * 1024, "{}", memory.used());
    }

    #[test]
    fn a_spill_directory_that_cannot_be_written_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let mut buffer = PartBuffer::new(memory(10, &missing), 1000);
        let error = buffer.write(&[0; 100]).unwrap_err();
        assert!(error.to_string().contains("no-such-dir"), "{error}");
    }
}
