//! Unix milliseconds to and from RFC 3339 text, for `sim data --from/--to`
//! and the times shown in tables. Pure: no clock, no time zone database
//! (times are shown in UTC).

/// `2024-05-01T12:34:56.789Z`.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // u64 ms / 86_400_000 fits an i64 easily.
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// A time given on the command line: Unix milliseconds (`1714566896789`),
/// a date (`2024-05-01`, midnight UTC) or an RFC 3339 date-time
/// (`2024-05-01T12:34:56Z`, `2024-05-01 12:34:56.5+09:00`).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "{s:?} is not a time: give Unix milliseconds, YYYY-MM-DD or \
             YYYY-MM-DDTHH:MM:SS[.mmm](Z|+HH:MM)"
        )
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let date = (|| {
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        valid_date(y, m, d).then(|| days_from_civil(y, m, d))
    })()
    .ok_or_else(bad)?;
    if b.len() == 10 {
        return ms_from(date, 0, 0).ok_or_else(bad);
    }
    let time = (|| {
        if !matches!(b.get(10), Some(b'T' | b't' | b' '))
            || b.get(13) != Some(&b':')
            || b.get(16) != Some(&b':')
        {
            return None;
        }
        let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        // Fraction: up to milliseconds kept, more digits allowed and cut.
        let mut i = 19;
        let mut frac_ms = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                if i - start < 3 {
                    frac_ms = frac_ms * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return None;
            }
            for _ in (i - start)..3 {
                frac_ms *= 10;
            }
        }
        let offset_s = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let o = oh * 3600 + om * 60;
                if sign == b'+' {
                    o
                } else {
                    -o
                }
            }
            _ => return None,
        };
        Some((h * 3600 + mi * 60 + sec - offset_s, frac_ms))
    })()
    .ok_or_else(bad)?;
    ms_from(date, time.0, time.1).ok_or_else(bad)
}

fn ms_from(days: i64, secs: i64, ms: i64) -> Option<u64> {
    let total = days
        .checked_mul(86_400_000)?
        .checked_add(secs.checked_mul(1000)?)?
        .checked_add(ms)?;
    u64::try_from(total).ok()
}

fn valid_date(y: i64, m: i64, d: i64) -> bool {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days_in_month).contains(&d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_utc_with_milliseconds() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_714_566_896_789), "2024-05-01T12:34:56.789Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_milliseconds_dates_and_date_times() {
        assert_eq!(parse_time("1714566896789"), Ok(1_714_566_896_789));
        assert_eq!(parse_time("2024-05-01"), Ok(1_714_521_600_000));
        assert_eq!(
            parse_time("2024-05-01T12:34:56.789Z"),
            Ok(1_714_566_896_789)
        );
        assert_eq!(parse_time("2024-05-01 12:34:56Z"), Ok(1_714_566_896_000));
        assert_eq!(
            parse_time("2024-05-01T21:34:56.7891+09:00"),
            Ok(1_714_566_896_789)
        );
        assert_eq!(parse_time("2024-05-01T12:34:56.5Z"), Ok(1_714_566_896_500));
        assert_eq!(
            parse_time("2024-05-01T02:34:56-10:00"),
            Ok(1_714_566_896_000)
        );
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2023-02-29",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:34:56",
            "2024-05-01T12:34:56.Z",
            "2024-05-01T12:34:56+0900",
            "2024-05-01T12:34:56Zjunk",
            "1969-12-31T23:59:59Z",
            "-5",
            "99999999999999999999999",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips_every_day_for_centuries() {
        for day in (0..200 * 366).step_by(7) {
            let ms = day * 86_400_000 + 45_296_007;
            assert_eq!(parse_time(&format_ms(ms)), Ok(ms), "{}", format_ms(ms));
        }
    }
}
