//! Dates as mail carries them: the From_ line's two forms, turned into Unix seconds, so a
//! replayed message keeps its received date as mtime and in its file name.
//!
//! The calendar (which days exist, days since 1970) and RFC 3339 output are the `time`
//! crate's. The tokenizer of a From_ line's date stays ours: writers put the same fields in
//! different orders and spacings (asctime's padded day, Takeout's offset before the year, a
//! zone name, no seconds), and we must know whether every word was part of the date
//! (`parse_exact_from_line_date` decides whether a line may split an mbox). A `time` format
//! description matches one fixed layout and cannot say which words it skipped.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime};

/// Seconds since the Unix epoch, UTC.
pub type Timestamp = i64;

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// Parses the date part of a From_ line: asctime (`Wed Jan  1 00:00:00 2020`, read as UTC)
/// or Google Takeout's (`Wed Jan 01 00:00:00 +0000 2020`, offset before the year). A zone
/// offset may also follow the year. Returns `None` unless month, day, time and year are all
/// there.
pub fn parse_from_line_date(text: &[u8]) -> Option<Timestamp> {
    parse_date_words(text).map(|(t, _)| t)
}

/// Like `parse_from_line_date`, but `None` also when any word is not part of the date
/// (a weekday, a time zone's name or offset are): `Jan 5 at 10:30 2024 we met` has a
/// date in it, but is prose, no From_ line's date.
pub fn parse_exact_from_line_date(text: &[u8]) -> Option<Timestamp> {
    parse_date_words(text).and_then(|(t, exact)| exact.then_some(t))
}

const WEEKDAYS: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];

/// The date in `text`, and whether every word of `text` was part of it.
fn parse_date_words(text: &[u8]) -> Option<(Timestamp, bool)> {
    let (mut month, mut day, mut hms, mut year, mut offset) = (None, None, None, None, 0i64);
    let mut exact = true;
    for tok in text.split(|b| b.is_ascii_whitespace()).filter(|t| !t.is_empty()) {
        if month.is_none()
            && tok.len() == 3
            && let Some(m) = MONTHS.iter().position(|m| tok.eq_ignore_ascii_case(&m[..]))
        {
            month = Some(m as u32 + 1);
            continue;
        }
        let mut used = true;
        if tok.contains(&b':') && hms.is_none() {
            hms = parse_hms(tok);
        } else if (tok[0] == b'+' || tok[0] == b'-') && tok.len() == 5 {
            let n = digits(&tok[1..])?;
            let secs = (n / 100) * 3600 + (n % 100) * 60;
            offset = if tok[0] == b'-' { -secs } else { secs };
        } else if let Some(n) = digits(tok) {
            match tok.len() {
                1 | 2 if month.is_some() && day.is_none() => day = Some(n as u32),
                4 if hms.is_some() || day.is_some() => year = Some(n),
                _ => used = false,
            }
        } else {
            used = is_weekday_or_zone_name(tok);
        }
        exact &= used;
    }
    let (y, mo, d, (h, mi, s)) = (year?, month?, day?, hms?);
    // Seconds added, not `time::Time`: a leap second (`23:59:60`) is read as the next day's
    // first second, as before.
    Some((days_from_civil(y, mo, d)? * 86400 + h * 3600 + mi * 60 + s - offset, exact))
}

/// `Wed`, or a zone's name as some writers put it in (`UTC`, `GMT`, `CEST`): the words of
/// a From_ line's date that carry nothing we read.
/// Whether `tok` is a weekday or month name, the way an asctime date starts.
pub fn is_weekday_or_month(tok: &[u8]) -> bool {
    WEEKDAYS.iter().chain(MONTHS.iter()).any(|w| tok.eq_ignore_ascii_case(&w[..]))
}

fn is_weekday_or_zone_name(tok: &[u8]) -> bool {
    WEEKDAYS.iter().any(|w| tok.eq_ignore_ascii_case(&w[..]))
        || ((2..=5).contains(&tok.len()) && tok.iter().all(u8::is_ascii_uppercase))
}

fn parse_hms(tok: &[u8]) -> Option<(i64, i64, i64)> {
    let mut parts = tok.split(|&b| b == b':');
    let h = digits(parts.next()?)?;
    let m = digits(parts.next()?)?;
    let s = parts.next().map(digits).unwrap_or(Some(0))?;
    (h < 24 && m < 60 && s < 61 && parts.next().is_none()).then_some((h, m, s))
}

fn digits(tok: &[u8]) -> Option<i64> {
    if tok.is_empty() || tok.len() > 9 || !tok.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(tok.iter().fold(0i64, |n, &b| n * 10 + i64::from(b - b'0')))
}

/// The wall clock, every use of it (a test build may put it ahead: `fault::clock_skew`).
pub fn system_now() -> std::time::SystemTime {
    std::time::SystemTime::now() + crate::fault::clock_skew()
}

/// The current time in Unix seconds (0 if the clock is before 1970).
pub fn now() -> Timestamp {
    system_now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A duration written as a number and a unit, as admins write them in `status`'s thresholds
/// and retention periods: `3600s`, `90m`, `6h`, `14d`, `2w`, `7y` (a year is 365 days). One
/// unit, no fraction: `1h30m` is `90m`.
pub fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("'{text}' is no age: a number and a unit, s, m, h, d, w or y (90m, 6h, 14d, 7y)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        "y" => 365 * 86400,
        _ => return Err(bad()),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    number.checked_mul(unit).map(std::time::Duration::from_secs).ok_or_else(bad)
}

/// A retention period (`expire --older-than`): whole days, weeks or years, at least a day.
/// `s`, `m` and `h` are refused: an admin's `6m` means six months, not six minutes.
pub fn parse_retention(text: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!(
            "'{text}' is no retention period: a number of days, weeks or years, d, w or y, at least 1d (90d, 26w, 7y)"
        )
    };
    if !text.ends_with(['d', 'w', 'y']) {
        return Err(bad());
    }
    parse_age(text).ok().filter(|age| age.as_secs() >= 86400).ok_or_else(bad)
}

/// `seconds` as `parse_age` reads it, in the largest unit that divides it (`6h`, `90m`).
pub fn format_age(seconds: u64) -> String {
    match seconds {
        0 => "0s".into(),
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `seconds` rounded for a person: `42s`, `17m`, `5h`, `3d` (under two units, the smaller).
pub fn rough_age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Days from 1970-01-01 to the given (proleptic Gregorian) date; `None` for a date that
/// is not on the calendar (31 February, month 13) or outside the years -9999..=9999.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()?;
    Some(i64::from(date.to_julian_day() - OffsetDateTime::UNIX_EPOCH.date().to_julian_day()))
}

/// `2020-01-01T00:00:00Z` for Unix seconds (RFC 3339, UTC). RFC 3339 has only the years
/// 0000..=9999: a time outside them (a file's mtime may be anything) is written `@<seconds>`,
/// as `date -d @<seconds>` reads it.
pub fn format_time(t: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{t}"))
}

/// `Wed Jan  1 00:00:00 2020`: asctime(3) of Unix seconds in UTC, the date an mbox From_
/// line carries (`parse_from_line_date` reads it back to the second). A time outside the
/// years 0..=9999 is written as the nearest one inside them.
pub fn format_asctime(t: Timestamp) -> String {
    const WEEKDAY: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let clamped = t.clamp(-62_167_219_200, 253_402_300_799);
    let time = OffsetDateTime::from_unix_timestamp(clamped).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let month = std::str::from_utf8(MONTHS[usize::from(u8::from(time.month())) - 1]).unwrap_or("Jan");
    format!(
        "{} {month} {:>2} {:02}:{:02}:{:02} {}",
        WEEKDAY[usize::from(time.weekday().number_days_from_monday())],
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.year()
    )
}

/// A day or a moment as an admin writes it on a command line: `2024-03-01` (its first
/// second, UTC) or `2024-03-01T12:30:00Z`. `None` for anything else.
pub fn parse_day(text: &str) -> Option<Timestamp> {
    let (day, clock) = match text.split_once('T') {
        Some((d, c)) => (d, Some(c.strip_suffix('Z')?)),
        None => (text, None),
    };
    let mut parts = day.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let num = |s: &str| digits(s.as_bytes());
    let days = days_from_civil(num(y)?, u32::try_from(num(m)?).ok()?, u32::try_from(num(d)?).ok()?)?;
    let secs = match clock {
        None => 0,
        Some(c) => {
            let (h, mi, s) = parse_hms(c.as_bytes())?;
            h * 3600 + mi * 60 + s
        }
    };
    Some(days * 86400 + secs)
}

/// `parse_day` for clap (`erase --before`): the error names the text and the two forms.
pub fn parse_date(text: &str) -> Result<Timestamp, String> {
    parse_day(text).ok_or_else(|| format!("'{text}' is no date: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_a_day_or_a_utc_time() {
        assert_eq!(parse_date("2020-01-01"), Ok(1577836800));
        assert_eq!(parse_date("2024-02-29T13:01:01Z"), Ok(1709208000 + 3661));
        for bad in
            ["", "2020-01", "2020-02-30", "2020-01-01T25:00:00Z", "2020-01-01T00:00:00", "yesterday", "2020-1-1x"]
        {
            let err = parse_date(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
    }

    #[test]
    fn asctime_is_what_a_from_line_carries_and_reads_back() {
        assert_eq!(format_asctime(1577836800), "Wed Jan  1 00:00:00 2020");
        assert_eq!(format_asctime(1795897882), "Sat Nov 28 20:31:22 2026");
        for t in [0, 1, 951782400, 1709208000, 1795897882] {
            assert_eq!(parse_exact_from_line_date(format_asctime(t).as_bytes()), Some(t), "{t}");
        }
    }

    #[test]
    fn a_day_on_the_command_line_is_its_first_second_utc() {
        assert_eq!(parse_day("2020-01-01"), Some(1577836800));
        assert_eq!(parse_day("2020-01-01T01:00:30Z"), Some(1577836800 + 3630));
        for bad in ["2020-1-1", "2020-02-30", "yesterday", "2020-01-01T25:00:00Z", "2020-01-01T01:00:00"] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn asctime_form_is_utc() {
        assert_eq!(parse_from_line_date(b"Wed Jan  1 00:00:00 2020"), Some(1577836800));
        assert_eq!(parse_from_line_date(b"Sat Nov 28 20:31:22 2026"), Some(1795897882));
        assert_eq!(parse_from_line_date(b"Thu Feb 29 12:00:00 2024"), Some(1709208000));
    }

    #[test]
    fn takeout_form_has_offset_before_year() {
        assert_eq!(parse_from_line_date(b"Wed Jan 01 00:00:00 +0000 2020"), Some(1577836800));
        assert_eq!(parse_from_line_date(b"Wed Jan 01 02:00:00 +0200 2020"), Some(1577836800));
        assert_eq!(parse_from_line_date(b"Tue Dec 31 19:00:00 -0500 2019"), Some(1577836800));
    }

    #[test]
    fn offset_after_year_and_missing_seconds_are_accepted() {
        assert_eq!(parse_from_line_date(b"Wed Jan 1 01:00 2020 +0100"), Some(1577836800));
    }

    #[test]
    fn text_that_is_no_date_is_refused() {
        for bad in
            [&b""[..], b"here on, we agree.", b"Jan 1 2020", b"Wed Jan 32 00:00:00 2020", b"Wed Foo 1 00:00:00 2020"]
        {
            assert_eq!(parse_from_line_date(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn an_exact_date_has_no_word_that_is_not_part_of_it() {
        for ok in [&b"Wed Jan  1 00:00:00 2020"[..], b"Wed Jan 01 00:00:00 +0000 2020", b"Wed Jan 1 01:00 2020 +0100"] {
            assert!(parse_exact_from_line_date(ok).is_some(), "{}", String::from_utf8_lossy(ok));
        }
        assert_eq!(parse_exact_from_line_date(b"Wed Jan  1 00:00:00 UTC 2020"), Some(1577836800));
        for prose in [&b"on Jan 5 at 10:30 2024 we met"[..], b"Wed Jan  1 00:00:00 2020 remote from uucp"] {
            assert!(parse_from_line_date(prose).is_some(), "the lenient parse reads a date in it");
            assert_eq!(parse_exact_from_line_date(prose), None, "{}", String::from_utf8_lossy(prose));
        }
    }

    #[test]
    fn dates_before_1970_are_negative() {
        assert_eq!(parse_from_line_date(b"Wed Dec 31 23:59:59 1969"), Some(-1));
        assert_eq!(parse_from_line_date(b"Sat Dec 14 00:00:00 1901"), Some(-2147472000));
    }

    /// Issue 19: 31 February was read as 2 March (in 2024) and a date at all.
    #[test]
    fn a_day_the_month_does_not_have_is_no_date_issue_19() {
        for bad in [&b"Sat Feb 31 00:00:00 2024"[..], b"Thu Feb 29 00:00:00 2023", b"Thu Apr 31 10:00:00 +0200 2025"] {
            assert_eq!(parse_from_line_date(bad), None, "{}", String::from_utf8_lossy(bad));
            assert_eq!(parse_exact_from_line_date(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(days_from_civil(2024, 2, 31), None);
        assert_eq!(days_from_civil(2024, 13, 1), None);
        assert_eq!(days_from_civil(2024, 2, 29), Some(19782));
        assert_eq!(days_from_civil(2100, 2, 29), None, "2100 is no leap year");
        assert_eq!(days_from_civil(2000, 2, 29), Some(11016), "2000 is one");
    }

    /// The hand-written conversions the `time` crate replaced (issue 19): the reference the
    /// crate must agree with on every valid date.
    mod before_issue_19 {
        pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
            let y = if m <= 2 { y - 1 } else { y };
            let era = y.div_euclid(400);
            let yoe = y - era * 400;
            let mp = (i64::from(m) + 9) % 12;
            let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            era * 146097 + doe - 719468
        }

        pub fn format_time(t: i64) -> String {
            let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
            let z = days + 719468;
            let era = z.div_euclid(146097);
            let doe = z - era * 146097;
            let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
        }
    }

    fn month_len(y: i64, m: u32) -> u32 {
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize - 1]
    }

    #[test]
    fn every_day_from_1901_to_2100_converts_as_before_issue_19() {
        let mut days = 0;
        for y in 1901..=2100 {
            for m in 1..=12 {
                for d in 1..=month_len(y, m) {
                    let old = before_issue_19::days_from_civil(y, m, d);
                    assert_eq!(days_from_civil(y, m, d), Some(old), "{y}-{m}-{d}");
                    for secs in [0, 3661, 86399] {
                        let t = old * 86400 + secs;
                        assert_eq!(format_time(t), before_issue_19::format_time(t), "{t}");
                    }
                    days += 1;
                }
            }
        }
        assert_eq!(days, 73049, "200 years of days, 49 of them 29 February");
    }

    proptest::proptest! {
        /// A From_ line's date, in each form and zone, gives the timestamp it gave before.
        #[test]
        fn from_line_dates_read_as_before_issue_19(
            y in 1901i64..=2100, m in 1u32..=12, d in 1u32..=31,
            h in 0i64..24, mi in 0i64..60, s in 0i64..61,
            zone in -1400i64..=1400, form in 0..3usize,
        ) {
            let d = d.min(month_len(y, m));
            let zone = zone / 100 * 100 + (zone % 100).abs() % 60 * zone.signum();
            let sign = if zone < 0 { '-' } else { '+' };
            let z = format!("{sign}{:04}", zone.abs());
            let month = String::from_utf8_lossy(&MONTHS[m as usize - 1][..]).into_owned();
            let line = match form {
                0 => format!("Wed {month} {d:2} {h:02}:{mi:02}:{s:02} {y}"),
                1 => format!("Wed {month} {d:02} {h:02}:{mi:02}:{s:02} {z} {y}"),
                _ => format!("Wed {month} {d} {h:02}:{mi:02}:{s:02} {y} {z}"),
            };
            let offset = if form == 0 { 0 } else { (zone / 100) * 3600 + (zone % 100) * 60 };
            let old = before_issue_19::days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + s - offset;
            proptest::prop_assert_eq!(parse_exact_from_line_date(line.as_bytes()), Some(old), "{}", line);
        }
    }

    #[test]
    fn a_time_rfc_3339_cannot_write_is_given_in_seconds() {
        assert_eq!(format_time(253402300799), "9999-12-31T23:59:59Z");
        assert_eq!(format_time(253402300800), "@253402300800");
        assert_eq!(format_time(i64::MIN), format!("@{}", i64::MIN));
    }

    #[test]
    fn an_age_is_a_number_and_one_unit() {
        let secs = |t: &str| parse_age(t).map(|d| d.as_secs());
        assert_eq!(secs("3600s"), Ok(3600));
        assert_eq!(secs("90m"), Ok(5400));
        assert_eq!(secs("6h"), Ok(21600));
        assert_eq!(secs("24h"), Ok(86400));
        assert_eq!(secs("14d"), Ok(14 * 86400));
        assert_eq!(secs("2w"), Ok(14 * 86400));
        assert_eq!(secs("7y"), Ok(7 * 365 * 86400));
        assert_eq!(secs("0s"), Ok(0));
        for bad in ["", "6", "h", "6x", "-6h", "6 h", "1h30m", "1.5h", "99999999999999999999d", "6H"] {
            let err = parse_age(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
        for s in [0, 59, 60, 5400, 21600, 86400, 1209600, 3601] {
            assert_eq!(secs(&format_age(s)), Ok(s), "{s}");
        }
        assert_eq!(format_age(21600), "6h");
        assert_eq!(
            (rough_age(42), rough_age(1000), rough_age(7300), rough_age(200000)),
            ("42s".into(), "16m".into(), "2h".into(), "2d".into())
        );
    }

    #[test]
    fn a_retention_period_is_days_weeks_or_years_of_at_least_a_day() {
        let secs = |t: &str| parse_retention(t).map(|d| d.as_secs());
        assert_eq!((secs("1d"), secs("26w"), secs("7y")), (Ok(86400), Ok(26 * 7 * 86400), Ok(7 * 365 * 86400)));
        for bad in ["6m", "48h", "90s", "0d", "0y", "7", "", "1mo", "7Y"] {
            let err = parse_retention(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")) && err.contains("d, w or y"), "{bad}: {err}");
        }
    }

    #[test]
    fn format_time_is_utc_iso() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1577836800), "2020-01-01T00:00:00Z");
        assert_eq!(format_time(1709208000 + 3661), "2024-02-29T13:01:01Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59Z");
    }
}
