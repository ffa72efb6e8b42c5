//! Timestamps on the command line: RFC 3339 (`2026-11-27T12:00:00Z`,
//! `2026-11-27T13:00:00.250+01:00`) or milliseconds since the Unix epoch. Parsed here rather
//! than with a date crate: this is the only date the CLI reads, and the format is small.

/// Milliseconds since the Unix epoch for an RFC 3339 date-time or a plain (non-negative)
/// integer of epoch milliseconds.
pub fn parse_timestamp_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let expected = "expected RFC 3339 (e.g. 2026-11-27T12:00:00Z) or epoch milliseconds";
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| format!("'{s}': {expected}"));
    }
    parse_rfc3339(s).ok_or_else(|| format!("'{s}': {expected}"))
}

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0i64, |acc, d| {
        acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    })
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // YYYY-MM-DDTHH:MM:SS is 19 bytes; then optional fraction, then the zone.
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // Milliseconds: the first three digits, the rest truncated.
        let mut ms = frac[..n.min(3)].to_vec();
        ms.resize(3, b'0');
        millis = digits(&ms)?;
        rest = &frac[n..];
    }
    let offset_min = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 60 + m;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_epoch_millis() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_timestamp_ms("2026-11-27T12:00:00Z"),
            Ok(1_795_780_800_000)
        );
        assert_eq!(
            parse_timestamp_ms("2026-11-27T13:00:00.250+01:00"),
            Ok(1_795_780_800_250)
        );
        assert_eq!(
            parse_timestamp_ms("2026-11-27T07:30:00.1234-04:30"),
            Ok(1_795_780_800_123)
        );
        assert_eq!(
            parse_timestamp_ms("2000-02-29t00:00:00z"),
            Ok(951_782_400_000)
        );
        assert_eq!(parse_timestamp_ms("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(parse_timestamp_ms("1795780800000"), Ok(1_795_780_800_000));
        assert_eq!(parse_timestamp_ms("0"), Ok(0));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "now",
            "-5",
            "2026-11-27",
            "2026-11-27T12:00:00",
            "2026-11-27T12:00Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T12:00:00.Z",
            "2026-11-27T12:00:00+1:00",
            "2026-11-27T12:00:00+01:60",
            "2026-11-27X12:00:00Z",
            "99999999999999999999",
            "2026-11-27T12:00:00Zjunk",
        ] {
            assert!(parse_timestamp_ms(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_timestamp_ms("x").err().as_deref(),
            Some("'x': expected RFC 3339 (e.g. 2026-11-27T12:00:00Z) or epoch milliseconds")
        );
    }
}
