//! Segment files: naming, directory sync, and a cursor that reads records
//! back in large chunks.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::{self, HeaderError, StopReason, FRAME_HEADER_LEN, HEADER_LEN, MAX_FRAME_LEN};

/// Bytes read per disk access: large enough that reading back a backlog is
/// a handful of syscalls per MiB, small enough to not matter in memory.
const CHUNK: usize = 1024 * 1024;

pub(super) const SEGMENT_SUFFIX: &str = ".seg";

/// `{first_seq:020}.seg`: zero-padded so names sort like seqs.
pub(super) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// The first seq a segment file name stands for, if it is one.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Makes file creations, renames and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates segment `first_seq` holding only its header, durably (file and
/// directory entry), so a crash right after leaves a valid empty segment.
pub(super) fn create_segment(dir: &Path, first_seq: u64) -> io::Result<File> {
    let path = segment_path(dir, first_seq);
    let created: io::Result<File> = (|| {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        format::encode_header(first_seq, &mut header);
        file.write_all(&header)?;
        file.sync_data()?;
        sync_dir(dir)?;
        Ok(file)
    })();
    if let Err(e) = &created {
        // Whatever part of it exists is useless; one that existed before
        // is not ours to remove.
        if e.kind() != io::ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(&path);
        }
    }
    created
}

/// Reads from `offset` until `buf` is full or the file ends; returns the
/// bytes read.
pub(super) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A record read from disk. `key` and `data` share the chunk they were read
/// into; callers copy what they keep for long.
#[derive(Debug, Clone)]
pub(super) struct RawRecord {
    pub(super) seq: u64,
    pub(super) accepted_at_ms: u64,
    pub(super) key: Bytes,
    pub(super) data: Bytes,
}

#[derive(Debug)]
pub(super) enum Next {
    Record(RawRecord),
    /// The readable length was reached on a frame boundary.
    End,
    /// The frame at `offset` is torn or corrupt.
    Stop {
        reason: StopReason,
        offset: u64,
    },
}

/// Why a segment could not be opened for reading.
#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("header says first seq {found}, the file name {expected}")]
    WrongFirstSeq { expected: u64, found: u64 },
}

/// Reads one segment's records in order, validating each frame.
#[derive(Debug)]
pub(super) struct SegmentCursor {
    pub(super) first_seq: u64,
    file: File,
    /// Bytes of the file from `buf_offset`.
    buf: Bytes,
    buf_offset: u64,
    /// Next frame, as an index into `buf`.
    pos: usize,
    /// Seq the next frame must carry.
    pub(super) next_seq: u64,
}

impl SegmentCursor {
    /// Opens a segment and checks its header against its name.
    pub(super) fn open(path: &Path, first_seq: u64) -> Result<Self, OpenError> {
        Self::new(File::open(path)?, first_seq)
    }

    pub(super) fn new(file: File, first_seq: u64) -> Result<Self, OpenError> {
        let mut header = [0; HEADER_LEN];
        let n = read_full_at(&file, &mut header, 0)?;
        let found = format::decode_header(&header[..n])?.first_seq;
        if found != first_seq {
            return Err(OpenError::WrongFirstSeq {
                expected: first_seq,
                found,
            });
        }
        Ok(Self {
            first_seq,
            file,
            buf: Bytes::new(),
            buf_offset: HEADER_LEN as u64,
            pos: 0,
            next_seq: first_seq,
        })
    }

    /// File offset of the next frame.
    pub(super) fn offset(&self) -> u64 {
        self.buf_offset + self.pos as u64
    }

    /// The next record before `limit` (the segment's readable length).
    pub(super) fn next(&mut self, limit: u64) -> io::Result<Next> {
        let mut refilled = false;
        loop {
            let frame_start = self.offset();
            if frame_start >= limit {
                return Ok(Next::End);
            }
            let in_limit = usize::try_from(limit - self.buf_offset).unwrap_or(usize::MAX);
            let avail = &self.buf[self.pos..self.buf.len().min(in_limit)];
            match format::decode_frame(avail, Some(self.next_seq)) {
                Ok((r, len)) => {
                    let raw = RawRecord {
                        seq: r.seq,
                        accepted_at_ms: r.accepted_at_ms,
                        key: self.buf.slice_ref(r.partition_key.as_bytes()),
                        data: self.buf.slice_ref(r.data),
                    };
                    self.pos += len;
                    self.next_seq += 1;
                    return Ok(Next::Record(raw));
                }
                Err(StopReason::Torn)
                    if !refilled && (avail.len() as u64) < limit - frame_start =>
                {
                    // The frame continues past what is buffered: read it,
                    // and a chunk more, from its start.
                    let need = format::declared_body_len(avail)
                        .map_or(FRAME_HEADER_LEN, |b| FRAME_HEADER_LEN + b)
                        .min(MAX_FRAME_LEN);
                    let want = usize::try_from(limit - frame_start)
                        .unwrap_or(usize::MAX)
                        .min(CHUNK.max(need));
                    let mut chunk = vec![0; want];
                    let n = read_full_at(&self.file, &mut chunk, frame_start)?;
                    chunk.truncate(n);
                    self.buf = Bytes::from(chunk);
                    self.buf_offset = frame_start;
                    self.pos = 0;
                    refilled = true;
                }
                Err(reason) => {
                    return Ok(Next::Stop {
                        reason,
                        offset: frame_start,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        let p = segment_path(Path::new("/x"), 42);
        assert_eq!(
            p.file_name().unwrap().to_str().unwrap(),
            "00000000000000000042.seg"
        );
        assert_eq!(parse_segment_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000042.seg.tmp"), None);
        assert_eq!(parse_segment_name("acks.log"), None);
    }

    #[test]
    fn cursor_reads_across_chunks_and_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 5);
        let mut buf = Vec::new();
        format::encode_header(5, &mut buf);
        let big = vec![7u8; 700 * 1024];
        let mut ends = Vec::new();
        for i in 0..4u64 {
            format::encode_record(&mut buf, 5 + i, i, "key", &big).unwrap();
            ends.push(buf.len() as u64);
        }
        std::fs::write(&path, &buf).unwrap();

        let mut c = SegmentCursor::open(&path, 5).unwrap();
        for i in 0..3u64 {
            let Next::Record(r) = c.next(ends[2]).unwrap() else {
                panic!("record {i}");
            };
            assert_eq!(
                (r.seq, r.accepted_at_ms, r.data.len()),
                (5 + i, i, big.len())
            );
            assert_eq!(&r.key[..], b"key");
        }
        assert!(matches!(c.next(ends[2]).unwrap(), Next::End));
        // The limit grows (more was committed): the cursor reads on.
        assert!(matches!(c.next(ends[3]).unwrap(), Next::Record(r) if r.seq == 8));

        assert!(matches!(
            SegmentCursor::open(&path, 6),
            Err(OpenError::WrongFirstSeq { .. })
        ));
    }
}
