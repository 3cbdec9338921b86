//! The spool against real files in a temporary directory.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::format::{self, HEADER_LEN};
use super::segment::{parse_segment_name, segment_path};
use super::writer::ACK_LOG;
use super::*;

fn opts(max_bytes: u64, segment_bytes: u64, when_full: WhenFull) -> SpoolOptions {
    SpoolOptions {
        max_bytes,
        segment_bytes,
        when_full,
    }
}

fn roomy() -> SpoolOptions {
    opts(1 << 30, 1 << 20, WhenFull::Refuse)
}

fn data(i: u64, len: usize) -> Bytes {
    let mut v = format!("record-{i}-").into_bytes();
    v.resize(len.max(v.len()), b'x');
    Bytes::from(v)
}

fn key(i: u64) -> Arc<str> {
    Arc::from(format!("imsi-{}", i % 3))
}

/// Appends `n` records (numbered from `from`, `len` bytes of data each),
/// all queued before any is awaited, and waits for their commits.
async fn append_n(spool: &Spool, from: u64, n: u64, len: usize) -> Vec<u64> {
    let acks: Vec<_> = (from..from + n)
        .map(|i| spool.append(key(i), data(i, len), 1_000 + i).unwrap())
        .collect();
    let mut seqs = Vec::new();
    for a in acks {
        seqs.push(a.await.unwrap());
    }
    seqs
}

fn read_all(reader: &mut SpoolReader) -> Vec<SpoolRecord> {
    let mut out = Vec::new();
    while let Some(r) = reader.next().unwrap() {
        out.push(r);
    }
    out
}

fn segment_files(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| parse_segment_name(e.unwrap().file_name().to_str()?))
        .collect();
    v.sort_unstable();
    v
}

/// Polls `f` for up to 5 s (the writer deletes files and flushes acks
/// every ~100 ms).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_record(r: &SpoolRecord, i: u64, len: usize) {
    assert_eq!(r.seq, i);
    assert_eq!(r.accepted_at_ms, 1_000 + i);
    assert_eq!(r.partition_key, key(i));
    assert_eq!(r.data, data(i, len));
}

#[tokio::test]
async fn spool_appends_read_back_and_only_unacked_replay_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, report) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(report.segments, 1);
    assert_eq!(report.unacked_estimate, 0);
    assert_eq!(
        append_n(&spool, 0, 10, 50).await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(*spool.committed().borrow(), 10);

    let mut reader = spool.reader();
    let got = read_all(&mut reader);
    assert_eq!(got.len(), 10);
    for (i, r) in got.iter().enumerate() {
        assert_record(r, i as u64, 50);
    }
    spool.ack_many(&[0, 1, 2]);
    spool.ack(4);
    spool.ack(4);
    spool.ack(99); // never committed: ignored
    let stats = spool.stats();
    assert_eq!(stats.records, 6);
    drop(reader);
    spool.close();
    drop(spool);

    let (spool, report) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(report.unacked_estimate, 6);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.corrupt, None);
    let mut reader = spool.reader();
    let got: Vec<u64> = read_all(&mut reader).iter().map(|r| r.seq).collect();
    assert_eq!(
        got,
        vec![3, 5, 6, 7, 8, 9],
        "read back from disk after reopen"
    );
    // Seqs continue after the last record.
    assert_eq!(append_n(&spool, 10, 2, 50).await, vec![10, 11]);
    let got = read_all(&mut reader);
    assert_record(&got[0], 10, 50);
    assert_record(&got[1], 11, 50);
}

#[tokio::test]
async fn spool_acks_reach_the_disk_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
    append_n(&spool, 0, 5, 10).await;
    let mut reader = spool.reader();
    assert_eq!(read_all(&mut reader).len(), 5);
    spool.ack_many(&[0, 1, 2, 3]);
    let log = dir.path().join(ACK_LOG);
    // The writer persists acks within ~100 ms, unprompted.
    eventually("the ack log", || {
        let buf = fs::read(&log).unwrap();
        let replay = acks::decode_log(&buf).unwrap();
        replay.acks.covers(0, 4)
    })
    .await;
}

#[tokio::test]
async fn spool_torn_tail_is_cut_and_seqs_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
        append_n(&spool, 0, 5, 100).await;
    }
    let seg = segment_path(dir.path(), 0);
    let good_len = fs::metadata(&seg).unwrap().len();
    // A half-written frame, as a crash mid-write leaves it.
    let mut torn = Vec::new();
    format::encode_record(&mut torn, 5, 1, "k", &[1; 100]).unwrap();
    torn.truncate(60);
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&torn)
        .unwrap();

    let (spool, report) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(report.truncated_bytes, 60);
    assert_eq!(report.corrupt, None, "a torn tail is not corruption");
    assert_eq!(report.unacked_estimate, 5);
    assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
    assert_eq!(append_n(&spool, 5, 2, 100).await, vec![5, 6]);
    let mut reader = spool.reader();
    let got = read_all(&mut reader);
    assert_eq!(got.len(), 7);
    for (i, r) in got.iter().enumerate() {
        assert_record(r, i as u64, 100);
    }
    drop(reader);
    drop(spool);

    // Garbage after the last record (a block of junk): cut and reported.
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[0xA5; 333])
        .unwrap();
    let (spool, report) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(report.truncated_bytes, 333);
    assert!(report.corrupt.is_some(), "junk is reported: {report:?}");
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    assert_eq!(append_n(&spool, 7, 1, 100).await, vec![7]);
}

#[tokio::test]
async fn spool_record_cut_mid_frame_is_dropped_and_its_seq_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
        append_n(&spool, 0, 5, 100).await;
    }
    let seg = segment_path(dir.path(), 0);
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (spool, report) = Spool::open(dir.path(), roomy()).unwrap();
    let frame = format::frame_len(key(4).len(), 100).unwrap() as u64;
    assert_eq!(report.truncated_bytes, frame - 3);
    assert_eq!(report.unacked_estimate, 4);
    // Seq 4 was never acked, so it can be assigned again.
    assert_eq!(append_n(&spool, 4, 1, 100).await, vec![4]);
}

#[tokio::test]
async fn spool_never_reuses_a_seq_the_ack_log_knows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
        append_n(&spool, 0, 5, 100).await;
        let mut reader = spool.reader();
        read_all(&mut reader);
        spool.ack_many(&[0, 1, 2, 3, 4]);
    }
    // The newest segment loses its last two records (the disk lied).
    let seg = segment_path(dir.path(), 0);
    let frame = format::frame_len(key(0).len(), 100).unwrap() as u64;
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 2 * frame)
        .unwrap();
    let (spool, report) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(report.unacked_estimate, 0);
    // Seq 3 and 4 were acked: a new record must not get them.
    assert_eq!(append_n(&spool, 5, 1, 100).await, vec![5]);
    let mut reader = spool.reader();
    let got = read_all(&mut reader);
    assert_eq!(got.len(), 1);
    assert_record(&got[0], 5, 100);
}

#[tokio::test]
async fn spool_torn_segment_header_starts_the_segment_over() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _) = Spool::open(dir.path(), opts(1 << 20, 300, WhenFull::Refuse)).unwrap();
        append_n(&spool, 0, 3, 200).await;
    }
    // A crash while creating the next segment leaves a short header.
    let next = segment_path(dir.path(), 3);
    fs::write(&next, b"SGS").unwrap();
    let (spool, report) = Spool::open(dir.path(), opts(1 << 20, 300, WhenFull::Refuse)).unwrap();
    assert_eq!(report.truncated_bytes, 3);
    assert_eq!(report.corrupt, None);
    assert_eq!(fs::metadata(&next).unwrap().len(), HEADER_LEN as u64);
    assert_eq!(append_n(&spool, 3, 1, 200).await, vec![3]);
    let mut reader = spool.reader();
    assert_eq!(read_all(&mut reader).len(), 4);
}

#[tokio::test]
async fn spool_segments_roll_over_and_go_when_fully_acked() {
    let dir = tempfile::tempdir().unwrap();
    // ~3 records of 200 bytes per segment.
    let (spool, _) = Spool::open(dir.path(), opts(1 << 20, 700, WhenFull::Refuse)).unwrap();
    append_n(&spool, 0, 20, 200).await;
    let files = segment_files(dir.path());
    assert!(files.len() >= 6, "{files:?}");
    assert_eq!(files[0], 0);
    assert_eq!(spool.stats().segments, files.len() as u64);
    for &f in &files {
        let len = fs::metadata(segment_path(dir.path(), f)).unwrap().len();
        assert!(len <= 700, "segment {f} is {len} bytes");
    }

    let mut reader = spool.reader();
    let got = read_all(&mut reader);
    assert_eq!(got.len(), 20);
    // Acking only the second segment's records deletes just that one.
    let second = files[1];
    let third = files[2];
    spool.ack_many(&(second..third).collect::<Vec<_>>());
    eventually("the second segment to go", || {
        !segment_files(dir.path()).contains(&second)
    })
    .await;
    assert!(segment_files(dir.path()).contains(&0));

    spool.ack_many(&(0..20).collect::<Vec<_>>());
    let newest = *files.last().unwrap();
    eventually("all but the newest segment to go", || {
        segment_files(dir.path()) == vec![newest]
    })
    .await;
    let stats = spool.stats();
    assert_eq!(stats.records, 0);
    assert_eq!(stats.segments, 1);
    assert_eq!(stats.oldest_unacked_ms, None);
    let newest_len = fs::metadata(segment_path(dir.path(), newest))
        .unwrap()
        .len();
    assert_eq!(stats.bytes, newest_len);
    drop(reader);
    drop(spool);

    let (spool, report) = Spool::open(dir.path(), opts(1 << 20, 700, WhenFull::Refuse)).unwrap();
    assert_eq!(report.segments, 1);
    assert_eq!(report.unacked_estimate, 0);
    assert!(spool.reader().next().unwrap().is_none());
    assert_eq!(append_n(&spool, 20, 1, 200).await, vec![20]);
}

#[tokio::test]
async fn spool_refuses_when_full_until_acks_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts(4000, 1000, WhenFull::Refuse)).unwrap();
    let mut accepted = 0u64;
    let err = loop {
        match spool.append(key(accepted), data(accepted, 200), 1_000 + accepted) {
            Ok(a) => {
                a.await.unwrap();
                accepted += 1;
            }
            Err(e) => break e,
        }
        assert!(accepted < 100, "never refused");
    };
    assert!(matches!(err, SpoolError::Full { max: 4000, .. }), "{err:?}");
    assert_eq!(err.reason(), "spool_full");
    assert!(spool.stats().bytes <= 4000);

    // Delivering frees whole segments, and room comes back.
    let mut reader = spool.reader();
    let got = read_all(&mut reader);
    assert_eq!(got.len() as u64, accepted);
    spool.ack_many(&got.iter().map(|r| r.seq).collect::<Vec<_>>());
    assert!(spool.stats().bytes < 1500, "{:?}", spool.stats());
    spool
        .append(key(0), data(0, 200), 0)
        .expect("room after acks")
        .await
        .unwrap();
}

#[tokio::test]
async fn spool_drop_oldest_deletes_the_oldest_segment_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts(4000, 1000, WhenFull::DropOldest)).unwrap();
    for i in 0..60 {
        spool
            .append(key(i), data(i, 200), 1_000 + i)
            .unwrap()
            .await
            .unwrap();
    }
    let stats = spool.stats();
    assert!(stats.dropped_oldest > 0, "{stats:?}");
    // Over by at most the batch being written plus a new segment header.
    assert!(stats.bytes <= 4000 + 300, "{stats:?}");
    assert_eq!(stats.records + stats.dropped_oldest, 60, "{stats:?}");

    let mut reader = spool.reader();
    let got = read_all(&mut reader);
    assert_eq!(got.len() as u64, stats.records);
    let first = got[0].seq;
    assert!(first > 0);
    for (i, r) in got.iter().enumerate() {
        assert_record(r, first + i as u64, 200);
    }
    assert_eq!(got.last().unwrap().seq, 59);
    // The writer deletes the dropped files at its next flush.
    eventually("dropped segment files to go", || {
        segment_files(dir.path())[0] == first
    })
    .await;
}

#[tokio::test]
async fn spool_drop_oldest_while_reading_skips_what_was_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts(4000, 1000, WhenFull::DropOldest)).unwrap();
    append_n(&spool, 0, 5, 200).await;
    let mut reader = spool.reader();
    assert_eq!(reader.next().unwrap().unwrap().seq, 0);
    for i in 5..60 {
        spool
            .append(key(i), data(i, 200), 1_000 + i)
            .unwrap()
            .await
            .unwrap();
    }
    let next = reader.next().unwrap().unwrap();
    assert!(next.seq > 5, "read a dropped record: {}", next.seq);
    assert_record(&next, next.seq, 200);
    // Acking a dropped record is harmless.
    spool.ack(0);
}

#[tokio::test]
async fn spool_group_commit_shares_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
    let before = spool.stats().commits;
    append_n(&spool, 0, 2000, 100).await;
    let commits = spool.stats().commits - before;
    assert!(commits >= 1);
    assert!(
        commits < 100,
        "2,000 queued appends took {commits} fsyncs: commits are not grouped"
    );

    // Concurrent appenders from many tasks share commits too.
    let before = spool.stats().commits;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..50u64 {
        let spool = Arc::clone(&spool);
        tasks.spawn(async move {
            for i in 0..20 {
                let n = 10_000 + t * 100 + i;
                spool
                    .append(key(n), data(n, 100), n)
                    .unwrap()
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let commits = spool.stats().commits - before;
    eprintln!("1,000 appends from 50 tasks: {commits} commits");
    assert!(commits < 1000, "{commits} commits for 1,000 appends");
    assert_eq!(spool.stats().records, 3000);
}

#[tokio::test]
async fn spool_reader_waits_for_commits_via_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
    let mut reader = spool.reader();
    let mut committed = spool.committed();
    assert!(reader.next().unwrap().is_none());
    let appender = {
        let spool = Arc::clone(&spool);
        tokio::spawn(async move { append_n(&spool, 0, 3, 10).await })
    };
    let mut got = Vec::new();
    while got.len() < 3 {
        match reader.next().unwrap() {
            Some(r) => {
                // Never ahead of what is committed.
                assert!(r.seq < *committed.borrow_and_update());
                got.push(r.seq);
            }
            None => committed.changed().await.unwrap(),
        }
    }
    assert_eq!(got, vec![0, 1, 2]);
    appender.await.unwrap();
}

#[tokio::test]
async fn spool_failed_write_fails_the_append_and_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    // One record per segment, so every append creates a file.
    let (spool, _) = Spool::open(&path, opts(1 << 20, 1, WhenFull::Refuse)).unwrap();
    assert_eq!(append_n(&spool, 0, 1, 10).await, vec![0]);
    fs::remove_dir_all(&path).unwrap();
    let err = spool.append(key(1), data(1, 10), 1_001).unwrap().await;
    assert!(matches!(err, Err(SpoolError::Io(_))), "{err:?}");
    let mut reader = spool.reader();
    assert_eq!(
        read_all(&mut reader)
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![0]
    );
    assert_eq!(spool.stats().records, 1);

    // The disk comes back: appends work again, past the failed seq.
    fs::create_dir_all(&path).unwrap();
    assert_eq!(append_n(&spool, 2, 1, 10).await, vec![2]);
    let got = read_all(&mut reader);
    assert_eq!(got.len(), 1);
    assert_record(&got[0], 2, 10);
    assert_eq!(spool.stats().records, 2);
}

#[tokio::test]
async fn spool_close_commits_queued_appends_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
    let queued: Vec<_> = (0..100)
        .map(|i| spool.append(key(i), data(i, 10), i).unwrap())
        .collect();
    spool.close();
    for (i, a) in queued.into_iter().enumerate() {
        assert_eq!(a.await.unwrap(), i as u64);
    }
    assert!(matches!(
        spool.append(key(0), data(0, 1), 0),
        Err(SpoolError::Closed)
    ));
    spool.close();
}

#[tokio::test]
async fn spool_refuses_records_too_large_for_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
    let big = Bytes::from(vec![0; format::MAX_BODY_LEN]);
    let err = spool.append(key(0), big, 0).unwrap_err();
    assert!(matches!(err, SpoolError::TooLarge { .. }), "{err:?}");
    assert_eq!(spool.stats().bytes, HEADER_LEN as u64);
}

#[tokio::test]
async fn spool_stats_track_the_oldest_unacked_record() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(spool.stats().oldest_unacked_ms, None);
    append_n(&spool, 0, 3, 10).await;
    assert_eq!(spool.stats().oldest_unacked_ms, Some(1_000));
    let mut reader = spool.reader();
    let r = reader.next().unwrap().unwrap();
    assert_eq!(spool.stats().oldest_unacked_ms, Some(1_000), "in flight");
    spool.ack(r.seq);
    assert_eq!(spool.stats().oldest_unacked_ms, Some(1_001));
    drop(reader);
    drop(spool);
    // After a restart, from what open learnt of the newest segment.
    let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
    let oldest = spool.stats().oldest_unacked_ms.unwrap();
    assert!(oldest <= 1_001, "{oldest}");
}

#[tokio::test]
async fn spool_torn_ack_log_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
        append_n(&spool, 0, 4, 10).await;
        read_all(&mut spool.reader());
        spool.ack_many(&[0, 1]);
    }
    let log = dir.path().join(ACK_LOG);
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&[1, 2, 3, 4, 5, 6, 7])
        .unwrap();
    let (spool, report) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(report.corrupt, None);
    assert_eq!(report.unacked_estimate, 2);
    let got: Vec<u64> = read_all(&mut spool.reader())
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(got, vec![2, 3]);
    spool.ack(2);
    drop(spool);
    // The torn bytes were cut, so the entry appended after them counts.
    let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
    let got: Vec<u64> = read_all(&mut spool.reader())
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(got, vec![3]);
}

#[tokio::test]
async fn spool_ack_log_is_compacted_when_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), roomy()).unwrap();
    append_n(&spool, 0, 3000, 1).await;
    let mut reader = spool.reader();
    let all: Vec<u64> = read_all(&mut reader).iter().map(|r| r.seq).collect();
    assert_eq!(all.len(), 3000);
    let log = dir.path().join(ACK_LOG);
    // Every other record: 1,500 ranges, 30 KB of log.
    let odd: Vec<u64> = all.iter().copied().filter(|s| s % 2 == 1).collect();
    spool.ack_many(&odd);
    eventually("odd acks logged", || {
        fs::metadata(&log).unwrap().len() > 30_000
    })
    .await;
    // The rest joins them into one range; past the threshold the log is
    // rewritten as that one range instead of growing by 1,500 entries.
    let even: Vec<u64> = all.iter().copied().filter(|s| s % 2 == 0).collect();
    spool.ack_many(&even);
    eventually("compaction", || fs::metadata(&log).unwrap().len() < 100).await;
    drop(reader);
    drop(spool);
    let (_, report) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(report.unacked_estimate, 0);
}

/// Writes a valid sealed segment of `n` records of `len` bytes from
/// `first`, as the writer would.
fn write_segment(dir: &Path, first: u64, n: u64, len: usize) {
    let mut buf = Vec::new();
    format::encode_header(first, &mut buf);
    for seq in first..first + n {
        format::encode_record(&mut buf, seq, 1_000 + seq, &key(seq), &data(seq, len)).unwrap();
    }
    fs::write(segment_path(dir, first), buf).unwrap();
}

/// Open must not read sealed segments (so it stays fast with a GiB
/// spooled): corruption inside one is not seen at open, only when the
/// reader gets there, and then it costs the rest of that segment only.
#[tokio::test]
async fn spool_open_leaves_sealed_segments_to_the_reader() {
    const PER_SEGMENT: u64 = 32;
    const LEN: usize = 64 * 1024;
    const SEALED: u64 = 24;
    let dir = tempfile::tempdir().unwrap();
    for s in 0..SEALED {
        write_segment(dir.path(), s * PER_SEGMENT, PER_SEGMENT, LEN);
    }
    write_segment(dir.path(), SEALED * PER_SEGMENT, 3, LEN);
    let total = SEALED * PER_SEGMENT + 3;
    // Damage record 10 of segment 3.
    let damaged_seg = segment_path(dir.path(), 3 * PER_SEGMENT);
    let frame = format::frame_len(key(0).len(), LEN).unwrap();
    let at = HEADER_LEN + 10 * frame + frame / 2;
    let mut bytes = fs::read(&damaged_seg).unwrap();
    bytes[at] ^= 0xFF;
    fs::write(&damaged_seg, bytes).unwrap();

    let started = Instant::now();
    let (spool, report) =
        Spool::open(dir.path(), opts(1 << 30, 8 << 20, WhenFull::Refuse)).unwrap();
    let took = started.elapsed();
    eprintln!("open with ~50 MB spooled: {took:?}");
    assert!(took < Duration::from_secs(5), "open took {took:?}");
    assert_eq!(report.segments, SEALED as usize + 1);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.corrupt, None, "open read a sealed segment");
    assert_eq!(report.unacked_estimate, total);
    assert_eq!(spool.stats().oldest_unacked_ms, Some(1_000));

    let mut reader = spool.reader();
    let got = read_all(&mut reader);
    let lost = PER_SEGMENT - 10;
    assert_eq!(got.len() as u64, total - lost);
    let mut expected = (0..total).filter(|s| !(3 * PER_SEGMENT + 10..4 * PER_SEGMENT).contains(s));
    for r in &got {
        let want = expected.next().unwrap();
        assert_record(r, want, LEN);
    }
    let stats = spool.stats();
    assert_eq!(stats.corrupt_skipped, lost);
    assert_eq!(stats.records, total - lost);
    // Once its readable records are acked, the damaged segment goes too.
    spool.ack_many(&got.iter().map(|r| r.seq).collect::<Vec<_>>());
    eventually("segments deleted", || segment_files(dir.path()).len() == 1).await;
}

/// The real figure from the brief: open in well under a second with 1 GiB
/// spooled. Slow to set up (writes 1 GiB), so run on demand:
/// `cargo test -p simgate spool_open_with_a_gib -- --ignored`.
#[tokio::test]
#[ignore = "writes 1 GiB"]
async fn spool_open_with_a_gib_spooled_is_fast() {
    const PER_SEGMENT: u64 = 1024;
    const LEN: usize = 64 * 1024 - 64;
    let dir = tempfile::tempdir().unwrap();
    for s in 0..16 {
        write_segment(dir.path(), s * PER_SEGMENT, PER_SEGMENT, LEN);
    }
    let started = Instant::now();
    let (spool, report) = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    let took = started.elapsed();
    eprintln!("open with 1 GiB spooled: {took:?} ({report:?})");
    assert!(took < Duration::from_secs(1), "open took {took:?}");
    assert_eq!(report.unacked_estimate, 16 * PER_SEGMENT);
    drop(spool);
}

#[tokio::test]
async fn spool_corrupt_sealed_header_skips_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    write_segment(dir.path(), 0, 5, 10);
    write_segment(dir.path(), 5, 5, 10);
    write_segment(dir.path(), 10, 5, 10);
    let middle = segment_path(dir.path(), 5);
    let mut bytes = fs::read(&middle).unwrap();
    bytes[0] = b'X';
    fs::write(&middle, bytes).unwrap();
    let (spool, report) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(report.corrupt, None);
    let got: Vec<u64> = read_all(&mut spool.reader())
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4, 10, 11, 12, 13, 14]);
    assert_eq!(spool.stats().corrupt_skipped, 5);
}

#[test]
fn spool_segment_size_is_capped_at_a_quarter_of_the_budget() {
    let o = opts(1000, 5000, WhenFull::Refuse).effective();
    assert_eq!(o.segment_bytes, 250);
    let o = SpoolOptions::default().effective();
    assert_eq!(o.segment_bytes, 64 << 20);
}

#[tokio::test]
async fn spool_appends_many_as_one_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so a batch straddles a segment roll.
    let (spool, _) = Spool::open(dir.path(), opts(64 << 10, 1 << 10, WhenFull::Refuse)).unwrap();
    let batch = |from: u64, n: u64| -> Vec<(Arc<str>, Bytes)> {
        (from..from + n).map(|i| (key(i), data(i, 100))).collect()
    };
    let ack = spool.append_many(batch(0, 30), 1_000).unwrap();
    assert_eq!(ack.seq(), 29, "the ack names the batch's last seq");
    assert_eq!(ack.await.unwrap(), 29);
    // Resolved only once all of them are committed.
    assert_eq!(*spool.committed().borrow(), 30);
    let mut reader = spool.reader();
    let got = read_all(&mut reader);
    assert_eq!(got.len(), 30);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        assert_eq!(r.data, data(i as u64, 100));
        assert_eq!(r.partition_key, key(i as u64));
    }

    // Over the budget: none of the batch is queued, and what fits alone
    // still goes in.
    let used = spool.stats().bytes;
    let too_many = ((64 << 10) - used) / 100 + 10;
    let err = spool.append_many(batch(30, too_many), 1_000).unwrap_err();
    assert!(matches!(err, SpoolError::Full { .. }), "{err:?}");
    assert_eq!(
        spool
            .append(key(30), data(30, 100), 1_030)
            .unwrap()
            .await
            .unwrap(),
        30
    );

    // An empty batch is durable at once.
    spool.append_many(Vec::new(), 1_000).unwrap().await.unwrap();
    spool.close();
    drop(reader);
    drop(spool);
    let (_, report) = Spool::open(dir.path(), roomy()).unwrap();
    assert_eq!(report.unacked_estimate, 31);
}
