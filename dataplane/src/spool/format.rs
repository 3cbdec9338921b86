//! The spool's segment format: a header, then length-prefixed, checksummed
//! records. Pure functions over byte slices: no files, no clock, and no
//! allocation when decoding (a decoded record borrows from the input).
//!
//! ```text
//! segment header (20 bytes)
//!   magic "SGSP" | version u16 LE | reserved u16 (0) | first seq u64 LE | crc32c u32 LE of the 16 bytes before
//! record frame, repeated
//!   len u32 LE | crc32c u32 LE | body (len bytes)
//!   body = seq u64 LE | accepted_at_ms u64 LE | key len u16 LE | key (UTF-8) | data (the rest)
//! ```
//!
//! The frame CRC covers the length bytes as well as the body, so a flipped
//! bit in the length is caught as a bad CRC rather than misread as a record
//! boundary. Within a segment, seqs are consecutive from the header's first
//! seq: a record that is intact but out of sequence (a stale block the file
//! system resurrected, say) stops the scan like any other corruption.
//!
//! A scan stops at the first frame that is incomplete ([`StopReason::Torn`]:
//! the normal end of a segment whose last write a crash interrupted) or
//! invalid (any other reason). Everything before it is good; the scanner
//! reports where the good prefix ends so recovery can truncate there.

use std::fmt;

/// Identifies a spool segment file.
pub const MAGIC: [u8; 4] = *b"SGSP";
/// Bumped on any incompatible change to the header or the frame.
pub const VERSION: u16 = 1;
/// Bytes of the segment header.
pub const HEADER_LEN: usize = 20;
/// Bytes of a frame before its body: length and CRC.
pub const FRAME_HEADER_LEN: usize = 8;
/// seq, accepted_at_ms and the key length: a body is never shorter.
pub const MIN_BODY_LEN: usize = 8 + 8 + 2;
/// Largest body accepted, either way. Sinks take at most ~1 MiB per record
/// (Kinesis: 1 MiB, Firehose: 1,000 KiB), so 2 MiB leaves room for the key
/// and any envelope overhead while a garbage length in a corrupt file never
/// makes a reader buffer more than this.
pub const MAX_BODY_LEN: usize = 2 * 1024 * 1024;
/// Largest frame: header plus the largest body.
pub const MAX_FRAME_LEN: usize = FRAME_HEADER_LEN + MAX_BODY_LEN;

/// A segment's header, once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Seq of the segment's first record (also its file name).
    pub first_seq: u64,
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("segment header is incomplete")]
    Torn,
    #[error("not a spool segment (bad magic)")]
    BadMagic,
    #[error("unsupported segment version {0}")]
    BadVersion(u16),
    #[error("segment header checksum mismatch")]
    BadCrc,
    /// Version 1 has no use for these bytes; anything but zero is not a
    /// header this code wrote.
    #[error("reserved segment header bytes are not zero")]
    BadReserved,
}

/// Why a scan stopped before the end of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    /// The input ends inside a frame (the tail of an interrupted write).
    #[error("torn record (input ends inside the frame)")]
    Torn,
    /// A length below the minimum body or above [`MAX_BODY_LEN`].
    #[error("impossible record length {0}")]
    BadLength(u32),
    #[error("record checksum mismatch")]
    BadCrc,
    /// The checksum matched but the body is malformed (key length past the
    /// body, key not UTF-8): written by something that is not this encoder.
    #[error("malformed record body")]
    BadBody,
    /// Intact, but not the next seq of the segment.
    #[error("record seq {found} where {expected} was expected")]
    BadSeq { expected: u64, found: u64 },
}

impl StopReason {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Torn => "torn",
            Self::BadLength(_) => "bad_length",
            Self::BadCrc => "bad_crc",
            Self::BadBody => "bad_body",
            Self::BadSeq { .. } => "bad_seq",
        }
    }
}

/// A record too big for the format (key over 65,535 bytes, or body over
/// [`MAX_BODY_LEN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record of {size} bytes exceeds the spool's limit of {max} bytes")]
pub struct TooLarge {
    pub size: usize,
    pub max: usize,
}

/// One decoded record, borrowing from the scanned bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub accepted_at_ms: u64,
    pub partition_key: &'a str,
    pub data: &'a [u8],
}

impl fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordRef")
            .field("seq", &self.seq)
            .field("accepted_at_ms", &self.accepted_at_ms)
            .field("partition_key", &self.partition_key)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Appends a segment header for `first_seq`.
pub fn encode_header(first_seq: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Reads the segment header at the start of `buf`.
pub fn decode_header(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(HeaderError::Torn);
    };
    let (fields, crc) = header.split_at(HEADER_LEN - 4);
    if fields[..4] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if crc32c::crc32c(fields) != le_u32(crc) {
        return Err(HeaderError::BadCrc);
    }
    let version = u16::from_le_bytes([fields[4], fields[5]]);
    if version != VERSION {
        return Err(HeaderError::BadVersion(version));
    }
    if fields[6..8] != [0, 0] {
        return Err(HeaderError::BadReserved);
    }
    Ok(SegmentHeader {
        first_seq: le_u64(&fields[8..16]),
    })
}

/// Bytes a record with these key and data lengths takes in a segment, or
/// why it cannot be stored.
pub fn frame_len(key_len: usize, data_len: usize) -> Result<usize, TooLarge> {
    let body = MIN_BODY_LEN
        .saturating_add(key_len)
        .saturating_add(data_len);
    if key_len > usize::from(u16::MAX) || body > MAX_BODY_LEN {
        return Err(TooLarge {
            size: body,
            max: MAX_BODY_LEN,
        });
    }
    Ok(FRAME_HEADER_LEN + body)
}

/// Appends one record frame; returns its length.
pub fn encode_record(
    out: &mut Vec<u8>,
    seq: u64,
    accepted_at_ms: u64,
    partition_key: &str,
    data: &[u8],
) -> Result<usize, TooLarge> {
    let len = frame_len(partition_key.len(), data.len())?;
    let body_len = len - FRAME_HEADER_LEN;
    let (Ok(body_len32), Ok(key_len16)) =
        (u32::try_from(body_len), u16::try_from(partition_key.len()))
    else {
        // frame_len bounds both far below these types' limits.
        return Err(TooLarge {
            size: body_len,
            max: MAX_BODY_LEN,
        });
    };
    out.reserve(len);
    let start = out.len();
    out.extend_from_slice(&body_len32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&accepted_at_ms.to_le_bytes());
    out.extend_from_slice(&key_len16.to_le_bytes());
    out.extend_from_slice(partition_key.as_bytes());
    out.extend_from_slice(data);
    let crc = frame_crc(&out[start..start + 4], &out[start + FRAME_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

fn frame_crc(len_bytes: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), body)
}

/// The body length a frame at the start of `buf` declares, once its first
/// four bytes are there (unchecked: the frame may still be invalid). Lets an
/// I/O reader know how much more to read for a torn frame.
pub fn declared_body_len(buf: &[u8]) -> Option<usize> {
    let len = le_u32(buf.get(..4)?);
    usize::try_from(len).ok()
}

/// Decodes the frame at the start of `buf`. `expected_seq`, when given, is
/// the seq the record must carry. Returns the record and the frame's length.
///
/// The length is checked against [`MAX_BODY_LEN`] before the input is asked
/// to hold the body, so a garbage length is `BadLength`, never a request to
/// read megabytes more.
pub fn decode_frame(
    buf: &[u8],
    expected_seq: Option<u64>,
) -> Result<(RecordRef<'_>, usize), StopReason> {
    let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
        return Err(StopReason::Torn);
    };
    let len32 = le_u32(&head[..4]);
    let body_len = usize::try_from(len32).map_err(|_| StopReason::BadLength(len32))?;
    if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Err(StopReason::BadLength(len32));
    }
    let frame_len = FRAME_HEADER_LEN + body_len;
    let Some(body) = buf.get(FRAME_HEADER_LEN..frame_len) else {
        return Err(StopReason::Torn);
    };
    if frame_crc(&head[..4], body) != le_u32(&head[4..8]) {
        return Err(StopReason::BadCrc);
    }
    let seq = le_u64(&body[..8]);
    let accepted_at_ms = le_u64(&body[8..16]);
    let key_len = usize::from(u16::from_le_bytes([body[16], body[17]]));
    let Some(key) = body.get(MIN_BODY_LEN..MIN_BODY_LEN + key_len) else {
        return Err(StopReason::BadBody);
    };
    let partition_key = std::str::from_utf8(key).map_err(|_| StopReason::BadBody)?;
    if let Some(expected) = expected_seq {
        if seq != expected {
            return Err(StopReason::BadSeq {
                expected,
                found: seq,
            });
        }
    }
    let record = RecordRef {
        seq,
        accepted_at_ms,
        partition_key,
        data: &body[MIN_BODY_LEN + key_len..],
    };
    Ok((record, frame_len))
}

/// Seq and accepted-at of the frame at the start of `buf`, read WITHOUT
/// checking its CRC. Only for estimates (how old a sealed segment's first
/// record is) where reading and verifying the whole frame is not worth it.
pub fn peek_frame(buf: &[u8]) -> Option<(u64, u64)> {
    let body = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + 16)?;
    Some((le_u64(&body[..8]), le_u64(&body[8..16])))
}

/// Iterates over the records of a segment body (the bytes after the header),
/// or any run of frames.
///
/// Yields `(offset, record)` for each good frame, `offset` relative to the
/// input. After it returns `None`, [`Self::good_end`] is where the good
/// prefix ends and [`Self::stop`] says why the scan ended short of the input
/// (`None`: every byte was consumed).
#[derive(Debug, Clone)]
pub struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    next_seq: Option<u64>,
    stop: Option<StopReason>,
}

impl<'a> Scanner<'a> {
    /// `first_seq`: the seq the first frame must carry; later frames must
    /// follow it consecutively. `None` takes the first frame's seq as given.
    pub fn new(buf: &'a [u8], first_seq: Option<u64>) -> Self {
        Self {
            buf,
            pos: 0,
            next_seq: first_seq,
            stop: None,
        }
    }

    /// A scanner over a whole segment: header, then records starting at the
    /// header's first seq. Offsets it yields count from the segment start.
    pub fn segment(buf: &'a [u8]) -> Result<(SegmentHeader, Self), HeaderError> {
        let header = decode_header(buf)?;
        let scanner = Self {
            buf,
            pos: HEADER_LEN,
            next_seq: Some(header.first_seq),
            stop: None,
        };
        Ok((header, scanner))
    }

    /// End of the last good frame (or of the header), relative to the input.
    pub fn good_end(&self) -> usize {
        self.pos
    }

    /// Why the scan stopped short of the input, once it has.
    pub fn stop(&self) -> Option<StopReason> {
        self.stop
    }

    /// The seq the next frame must carry, if known.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = (usize, RecordRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.stop.is_some() || self.pos >= self.buf.len() {
            return None;
        }
        let buf: &'a [u8] = self.buf;
        match decode_frame(&buf[self.pos..], self.next_seq) {
            Ok((record, len)) => {
                let offset = self.pos;
                self.pos += len;
                self.next_seq = Some(record.seq.wrapping_add(1));
                Some((offset, record))
            }
            Err(reason) => {
                self.stop = Some(reason);
                None
            }
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Rec {
        accepted_at_ms: u64,
        key: String,
        data: Vec<u8>,
    }

    fn rec() -> impl Strategy<Value = Rec> {
        (
            any::<u64>(),
            "[a-zA-Z0-9éあ]{0,12}",
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(accepted_at_ms, key, data)| Rec {
                accepted_at_ms,
                key,
                data,
            })
    }

    /// A segment starting at `first` with `recs`, and each frame's end.
    fn segment(first: u64, recs: &[Rec]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        encode_header(first, &mut buf);
        let mut ends = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            encode_record(
                &mut buf,
                first + i as u64,
                r.accepted_at_ms,
                &r.key,
                &r.data,
            )
            .unwrap();
            ends.push(buf.len());
        }
        (buf, ends)
    }

    fn check_prefix(buf: &[u8], first: u64, recs: &[Rec], ends: &[usize], cut: usize) {
        let cut_buf = &buf[..cut];
        if cut < HEADER_LEN {
            assert_eq!(Scanner::segment(cut_buf).unwrap_err(), HeaderError::Torn);
            return;
        }
        let (header, mut scanner) = Scanner::segment(cut_buf).unwrap();
        assert_eq!(header.first_seq, first);
        let got: Vec<_> = scanner.by_ref().collect();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(got.len(), whole, "cut at {cut}");
        for (i, (offset, r)) in got.iter().enumerate() {
            let want = &recs[i];
            assert_eq!(r.seq, first + i as u64);
            assert_eq!(r.accepted_at_ms, want.accepted_at_ms);
            assert_eq!(r.partition_key, want.key);
            assert_eq!(r.data, &want.data[..]);
            let start = if i == 0 { HEADER_LEN } else { ends[i - 1] };
            assert_eq!(*offset, start);
        }
        let good_end = if whole == 0 {
            HEADER_LEN
        } else {
            ends[whole - 1]
        };
        assert_eq!(scanner.good_end(), good_end);
        if cut == good_end {
            assert_eq!(scanner.stop(), None);
        } else {
            assert_eq!(scanner.stop(), Some(StopReason::Torn), "cut at {cut}");
        }
    }

    proptest! {
        /// Truncating at every byte offset recovers exactly the records
        /// whose whole frame fits, in order, and reports the rest as torn.
        #[test]
        fn truncation_at_every_offset(
            first in any::<u64>().prop_map(|s| s % (u64::MAX / 2)),
            recs in proptest::collection::vec(rec(), 0..8),
        ) {
            let (buf, ends) = segment(first, &recs);
            for cut in 0..=buf.len() {
                check_prefix(&buf, first, &recs, &ends, cut);
            }
        }

    }

    proptest! {
        // Big inputs are slow to generate; fewer cases cover them well.
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Big segments: random cut points.
        #[test]
        fn truncation_at_random_offsets(
            recs in proptest::collection::vec(rec(), 50..300),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 20),
        ) {
            let (buf, ends) = segment(7, &recs);
            for cut in cuts {
                check_prefix(&buf, 7, &recs, &ends, cut.index(buf.len() + 1));
            }
        }

    }

    proptest! {
        /// Flipping any bit never yields a record with content that was not
        /// written: every record returned is one of the originals, at its
        /// place, and the scan stops at or before the damaged frame.
        #[test]
        fn bit_flip_never_yields_wrong_content(
            recs in proptest::collection::vec(rec(), 1..10),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let (mut buf, ends) = segment(100, &recs);
            let at = at.index(buf.len());
            buf[at] ^= 1 << bit;
            match Scanner::segment(&buf) {
                Err(e) => prop_assert!(at < HEADER_LEN, "header refused ({e}) for a flip at {at}"),
                Ok((header, mut scanner)) => {
                    prop_assert!(at >= HEADER_LEN, "a flipped header byte {at} was accepted");
                    prop_assert_eq!(header.first_seq, 100);
                    let got: Vec<_> = scanner.by_ref().collect();
                    for (i, (_, r)) in got.iter().enumerate() {
                        let want = &recs[i];
                        prop_assert_eq!(r.seq, 100 + i as u64);
                        prop_assert_eq!(r.accepted_at_ms, want.accepted_at_ms);
                        prop_assert_eq!(r.partition_key, want.key.as_str());
                        prop_assert_eq!(r.data, &want.data[..]);
                    }
                    let damaged = ends.iter().position(|&e| at < e).unwrap();
                    prop_assert_eq!(got.len(), damaged, "scan passed the damaged frame");
                    prop_assert!(scanner.stop().is_some());
                }
            }
        }

        /// Arbitrary bytes: no panic, the good prefix is within the input,
        /// and every record re-encodes to the bytes it was read from.
        #[test]
        fn arbitrary_bytes_are_safe(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut scanner = Scanner::new(&buf, None);
            let mut prev_end = 0;
            for (offset, r) in scanner.by_ref() {
                prop_assert_eq!(offset, prev_end);
                let mut again = Vec::new();
                let len = encode_record(&mut again, r.seq, r.accepted_at_ms, r.partition_key, r.data).unwrap();
                prop_assert_eq!(&buf[offset..offset + len], &again[..]);
                prev_end = offset + len;
            }
            prop_assert_eq!(scanner.good_end(), prev_end);
            prop_assert!(scanner.good_end() <= buf.len());
        }
    }

    #[test]
    fn garbage_length_is_bad_length_not_torn() {
        let mut buf = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        assert_eq!(
            decode_frame(&buf, None).unwrap_err(),
            StopReason::BadLength(0x7fff_ffff)
        );
        // A zeroed tail (what some file systems show after a crash) too.
        buf.fill(0);
        assert_eq!(
            decode_frame(&buf, None).unwrap_err(),
            StopReason::BadLength(0)
        );
    }

    #[test]
    fn out_of_sequence_record_stops_the_scan() {
        let mut buf = Vec::new();
        encode_header(10, &mut buf);
        encode_record(&mut buf, 10, 1, "k", b"a").unwrap();
        let good = buf.len();
        encode_record(&mut buf, 12, 1, "k", b"b").unwrap();
        let (_, mut scanner) = Scanner::segment(&buf).unwrap();
        assert_eq!(scanner.by_ref().count(), 1);
        assert_eq!(scanner.good_end(), good);
        assert_eq!(
            scanner.stop(),
            Some(StopReason::BadSeq {
                expected: 11,
                found: 12
            })
        );
    }

    #[test]
    fn key_past_body_is_bad_body_even_with_good_crc() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 2, "key", b"").unwrap();
        // Claim a 200-byte key and fix up the CRC as a buggy writer would.
        buf[FRAME_HEADER_LEN + 16..FRAME_HEADER_LEN + 18].copy_from_slice(&200u16.to_le_bytes());
        let crc = frame_crc(&buf[..4], &buf[FRAME_HEADER_LEN..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_frame(&buf, None).unwrap_err(), StopReason::BadBody);
    }

    #[test]
    fn too_large_records_are_refused() {
        let mut out = Vec::new();
        let big = vec![0; MAX_BODY_LEN];
        assert!(encode_record(&mut out, 0, 0, "k", &big).is_err());
        let long_key = "k".repeat(70_000);
        assert!(encode_record(&mut out, 0, 0, &long_key, b"").is_err());
        assert!(out.is_empty());
        let fits = vec![0; MAX_BODY_LEN - MIN_BODY_LEN - 1];
        assert_eq!(
            encode_record(&mut out, 0, 0, "k", &fits).unwrap(),
            MAX_FRAME_LEN
        );
        assert_eq!(decode_frame(&out, Some(0)).unwrap().1, MAX_FRAME_LEN);
    }

    #[test]
    fn header_round_trip_and_refusals() {
        let mut buf = Vec::new();
        encode_header(42, &mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(decode_header(&buf).unwrap().first_seq, 42);
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert_eq!(decode_header(&bad).unwrap_err(), HeaderError::BadMagic);
        let mut bad = buf.clone();
        bad[10] ^= 1;
        assert_eq!(decode_header(&bad).unwrap_err(), HeaderError::BadCrc);
        // Reserved bytes set, CRC fixed up (found by fuzzing): refused, as
        // the header would not re-encode to the same bytes.
        let mut bad = buf.clone();
        bad[7] = 0x23;
        let crc = crc32c::crc32c(&bad[..16]);
        bad[16..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_header(&bad).unwrap_err(), HeaderError::BadReserved);
        assert_eq!(
            decode_header(&buf[..HEADER_LEN - 1]).unwrap_err(),
            HeaderError::Torn
        );
    }
}
