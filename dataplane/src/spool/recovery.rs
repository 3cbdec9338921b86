//! Opening a spool directory after a clean stop or a crash.
//!
//! Only the newest segment can have a torn tail (the others were sealed
//! after their last fsync), so only it is scanned: open costs one segment's
//! read however much is spooled. Sealed segments are validated when the
//! reader gets to them; here only their first record's timestamp is peeked
//! at (a few dozen bytes each, for the oldest-record estimate).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek as _, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::warn;

use super::acks::{self, AckSet, LogStop};
use super::format::{self, FRAME_HEADER_LEN, HEADER_LEN};
use super::segment::{
    create_segment, parse_segment_name, read_full_at, segment_path, sync_dir, Next, OpenError,
    SegmentCursor,
};
use super::state::{SegmentMeta, State, SAMPLE_BYTES};
use super::writer::{AckLog, Active, ACK_LOG, ACK_LOG_TMP};
use super::{RecoveryReport, SpoolError};

pub(super) struct Recovered {
    pub(super) state: State,
    pub(super) active: Active,
    pub(super) ack_log: AckLog,
    /// The seq the next append gets.
    pub(super) next_seq: u64,
    pub(super) report: RecoveryReport,
}

pub(super) fn recover(dir: &Path, used: Arc<AtomicU64>) -> Result<Recovered, SpoolError> {
    fs::create_dir_all(dir)?;
    let mut problems = Vec::new();
    let mut truncated_bytes = 0;

    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            files.insert(first, meta.len());
        }
    }
    // A compaction that did not get to its rename.
    match fs::remove_file(dir.join(ACK_LOG_TMP)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let (mut done, ack_log) = open_ack_log(dir, &mut problems)?;

    let mut state = State::new(Arc::clone(&used));
    let active = match files.pop_last() {
        Some((first, len)) => {
            let newest = recover_newest(dir, first, len, &mut problems)?;
            truncated_bytes += newest.truncated;
            state.segments.insert(
                first,
                SegmentMeta {
                    len: newest.active.len,
                    last_sample_offset: newest.last_sample_offset,
                },
            );
            state.ts_index.extend(newest.samples);
            newest.active
        }
        None => {
            // A new spool (or one whose files were removed by hand): start
            // after anything the ack log knows about.
            let first = done.max_end().unwrap_or(0);
            Active {
                first_seq: first,
                file: create_segment(dir, first)?,
                len: HEADER_LEN as u64,
                next_seq: first,
            }
        }
    };
    state
        .segments
        .entry(active.first_seq)
        .or_insert(SegmentMeta::new(active.len));
    for (&first, &len) in &files {
        state.segments.insert(first, SegmentMeta::new(len));
        if let Some((seq, ms)) = peek_first_record(dir, first) {
            state.ts_index.insert(seq, ms);
        }
    }

    // Seqs must never be reused: an ack logged for a seq the newest segment
    // no longer holds (its tail was lost, or the write failed) would mark a
    // new record done. Continue past both.
    let next_seq = active.next_seq.max(done.max_end().unwrap_or(0));
    let floor = state.segments.keys().next().copied().unwrap_or(next_seq);
    done.remove_below(floor);
    state.acks = done;
    state.active = Some(active.first_seq);
    state.committed_end = next_seq;
    state.floor = floor;
    state.read_cursor = floor;
    let total: u64 = state.segments.values().map(|m| m.len).sum();
    used.store(total, Ordering::Relaxed);

    // Segments finished before the crash whose files were not yet deleted.
    state.delete_covered(floor, next_seq);
    let stale = std::mem::take(&mut state.to_delete);
    for first in &stale {
        fs::remove_file(segment_path(dir, *first))?;
    }
    if !stale.is_empty() {
        sync_dir(dir)?;
    }

    let report = RecoveryReport {
        segments: state.segments.len(),
        truncated_bytes,
        corrupt: (!problems.is_empty()).then(|| problems.join("; ")),
        unacked_estimate: state.unacked(),
    };
    if let Some(corrupt) = &report.corrupt {
        warn!(dir = %dir.display(), %corrupt, "spool recovered from corruption");
    }
    Ok(Recovered {
        state,
        active,
        ack_log,
        next_seq,
        report,
    })
}

struct Newest {
    active: Active,
    truncated: u64,
    samples: Vec<(u64, u64)>,
    last_sample_offset: u64,
}

/// Scans the newest segment and cuts it back to its last good record.
fn recover_newest(
    dir: &Path,
    first: u64,
    len: u64,
    problems: &mut Vec<String>,
) -> Result<Newest, SpoolError> {
    let path = segment_path(dir, first);
    let name = path
        .file_name()
        .map_or_else(|| first.to_string(), |n| n.to_string_lossy().into_owned());
    let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
    let mut cursor = match SegmentCursor::new(file.try_clone()?, first) {
        Ok(c) => c,
        Err(OpenError::Io(e)) => return Err(e.into()),
        Err(e) => {
            // A crash while the segment was being created leaves a short
            // header; anything else is damage. Either way no record in it
            // can be trusted: start it over.
            if len >= HEADER_LEN as u64 {
                problems.push(format!("{name}: {e}; {len} bytes discarded"));
            }
            file.set_len(0)?;
            let mut header = Vec::with_capacity(HEADER_LEN);
            format::encode_header(first, &mut header);
            std::os::unix::fs::FileExt::write_all_at(&file, &header, 0)?;
            file.sync_data()?;
            file.seek(SeekFrom::Start(HEADER_LEN as u64))?;
            return Ok(Newest {
                active: Active {
                    first_seq: first,
                    file,
                    len: HEADER_LEN as u64,
                    next_seq: first,
                },
                truncated: len,
                samples: Vec::new(),
                last_sample_offset: 0,
            });
        }
    };
    let mut samples = Vec::new();
    let mut last_sample_offset = 0;
    loop {
        let offset = cursor.offset();
        match cursor.next(len)? {
            Next::Record(r) => {
                if samples.is_empty() || offset - last_sample_offset >= SAMPLE_BYTES {
                    samples.push((r.seq, r.accepted_at_ms));
                    last_sample_offset = offset;
                }
            }
            Next::End => break,
            Next::Stop { reason, offset } => {
                if reason != format::StopReason::Torn {
                    problems.push(format!(
                        "{name}: {reason} at offset {offset}; {} bytes truncated",
                        len - offset
                    ));
                }
                break;
            }
        }
    }
    let good_end = cursor.offset().min(len);
    let truncated = len - good_end;
    if truncated > 0 {
        file.set_len(good_end)?;
        file.sync_data()?;
    }
    file.seek(SeekFrom::Start(good_end))?;
    Ok(Newest {
        active: Active {
            first_seq: first,
            file,
            len: good_end,
            next_seq: cursor.next_seq,
        },
        truncated,
        samples,
        last_sample_offset,
    })
}

/// Seq and accepted-at of a sealed segment's first record, unverified (see
/// [`format::peek_frame`]); `None` if anything looks off.
fn peek_first_record(dir: &Path, first: u64) -> Option<(u64, u64)> {
    let file = File::open(segment_path(dir, first)).ok()?;
    let mut buf = [0; HEADER_LEN + FRAME_HEADER_LEN + 16];
    let n = read_full_at(&file, &mut buf, 0).ok()?;
    let header = format::decode_header(&buf[..n]).ok()?;
    let (seq, ms) = format::peek_frame(&buf[HEADER_LEN..n])?;
    (header.first_seq == first && seq == first).then_some((seq, ms))
}

/// Replays `acks.log`, cutting a torn or corrupt tail; creates it if absent.
fn open_ack_log(dir: &Path, problems: &mut Vec<String>) -> Result<(AckSet, AckLog), SpoolError> {
    let path = dir.join(ACK_LOG);
    let buf = match fs::read(&path) {
        Ok(buf) => buf,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((AckSet::new(), AckLog::rewrite(dir, &[])?));
        }
        Err(e) => return Err(e.into()),
    };
    let replay = match acks::decode_log(&buf) {
        Ok(replay) => replay,
        Err(e) => {
            if buf.len() >= acks::LOG_HEADER_LEN {
                problems.push(format!(
                    "{ACK_LOG}: {e}; acks lost, delivered records will be sent again"
                ));
            }
            return Ok((AckSet::new(), AckLog::rewrite(dir, &[])?));
        }
    };
    let file = OpenOptions::new().read(true).append(true).open(&path)?;
    if let Some(stop) = replay.stop {
        if stop != LogStop::Torn {
            problems.push(format!(
                "{ACK_LOG}: {stop} at offset {}; later acks lost, some records will be sent again",
                replay.good_end
            ));
        }
        file.set_len(replay.good_end as u64)?;
        file.sync_data()?;
    }
    let len = replay.good_end as u64;
    Ok((
        replay.acks,
        AckLog {
            file,
            len,
            broken: false,
        },
    ))
}
