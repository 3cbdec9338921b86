//! Properties of the spool's on-disk formats (`simgate::spool::format`,
//! `simgate::spool::acks`), which recovery and the reader trust after a
//! crash or on a damaged disk.
//!
//! Input: the bytes of a segment file (header, then frames), as recovery
//! would read them; the same bytes are also scanned as bare frames (no
//! header) and replayed as an ack log, so mutations that break the header
//! CRC still exercise the frame and log decoders.
//!
//! Properties:
//! * Nothing panics, and no scan reports a good prefix past the input.
//! * A segment header is refused as `Torn` exactly when the input is
//!   shorter than it; an accepted header re-encodes to the input's first
//!   bytes.
//! * Every record a scan returns re-encodes to exactly the bytes it was read
//!   from; records tile the input from the header on without gaps, and in a
//!   segment their seqs run consecutively from the header's first seq.
//! * The scan stops short of the input exactly when it gives a reason, and
//!   scanning only the good prefix returns the same records and no reason
//!   (recovery truncates there, and the next open must agree).
//! * An ack log replay ends on an entry boundary, every entry up to there
//!   re-encodes to its bytes, and the replayed set is their union.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use simgate::spool::acks::{self, AckSet, LogHeaderError};
use simgate::spool::format::{self, HeaderError, Scanner, HEADER_LEN};

pub(crate) fn check(data: &[u8]) {
    match Scanner::segment(data) {
        Err(e) => {
            assert_eq!(
                e == HeaderError::Torn,
                data.len() < HEADER_LEN,
                "header error {e:?} for {} bytes",
                data.len()
            );
        }
        Ok((header, scanner)) => {
            let mut again = Vec::new();
            format::encode_header(header.first_seq, &mut again);
            assert_eq!(&data[..HEADER_LEN], &again[..], "header does not re-encode");
            let records = check_scan(data, HEADER_LEN, scanner);
            for (i, seq) in records.iter().enumerate() {
                assert_eq!(*seq, header.first_seq.wrapping_add(i as u64), "seq {i}");
            }
        }
    }
    check_scan(data, 0, Scanner::new(data, None));
    check_ack_log(data);
    // The unchecked peeks used for estimates never panic.
    let _ = format::peek_frame(data);
    let _ = format::declared_body_len(data);
}

/// Checks one scan starting at `start`; returns the seqs it read.
fn check_scan(data: &[u8], start: usize, mut scanner: Scanner<'_>) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut end = start;
    for (offset, r) in scanner.by_ref() {
        assert_eq!(offset, end, "records do not tile the input");
        let mut again = Vec::new();
        let len =
            format::encode_record(&mut again, r.seq, r.accepted_at_ms, r.partition_key, r.data)
                .expect("a decoded record is small enough to encode");
        assert_eq!(
            data.get(offset..offset + len),
            Some(&again[..]),
            "record {} at {offset} does not re-encode to its bytes",
            r.seq
        );
        end = offset + len;
        seqs.push(r.seq);
    }
    let good_end = scanner.good_end();
    assert_eq!(
        good_end,
        end.max(start),
        "good prefix is not the last record's end"
    );
    assert!(good_end <= data.len(), "good prefix past the input");
    assert_eq!(
        scanner.stop().is_some(),
        good_end < data.len(),
        "stopped at {good_end} of {} with reason {:?}",
        data.len(),
        scanner.stop()
    );

    // What recovery keeps must scan the same, with nothing left over.
    let expected_first = (start == HEADER_LEN)
        .then(|| seqs.first().copied())
        .flatten();
    let mut prefix = Scanner::new(&data[start..good_end], expected_first);
    let again: Vec<u64> = prefix.by_ref().map(|(_, r)| r.seq).collect();
    assert_eq!(again, seqs, "the good prefix scans differently");
    assert_eq!(prefix.stop(), None, "the good prefix does not scan cleanly");
    seqs
}

fn check_ack_log(data: &[u8]) {
    let replay = match acks::decode_log(data) {
        Ok(replay) => replay,
        Err(e) => {
            assert_eq!(
                e == LogHeaderError::Torn,
                data.len() < acks::LOG_HEADER_LEN,
                "ack log header error {e:?} for {} bytes",
                data.len()
            );
            return;
        }
    };
    let good_end = replay.good_end;
    assert!(good_end <= data.len());
    assert_eq!((good_end - acks::LOG_HEADER_LEN) % acks::LOG_ENTRY_LEN, 0);
    assert_eq!(replay.stop.is_some(), good_end < data.len());
    let mut union = AckSet::new();
    let mut again = Vec::new();
    acks::encode_log_header(&mut again);
    for entry in data[acks::LOG_HEADER_LEN..good_end].chunks(acks::LOG_ENTRY_LEN) {
        let start = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        let end = u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes"));
        acks::encode_log_entry(&mut again, start, end);
        union.insert_range(start, end);
    }
    assert_eq!(
        &again[..],
        &data[..good_end],
        "ack log entries do not re-encode"
    );
    assert_eq!(
        replay.acks, union,
        "replayed set is not the union of the entries"
    );
}
