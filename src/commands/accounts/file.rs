//! The accounts file on disk: its current entries, and its replacement in one atomic step,
//! so Exim reads either the old list or the new one, whole, and a failed sync changes nothing;
//! and the file's earlier sizes, kept in a comment line, against which a shrink is judged.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::AccountsError;
use crate::envelope::lsearch_keys;

/// The file's bytes (`None` when it does not exist yet) and its keys, lower-cased.
pub fn read_current(path: &Path) -> Result<(Option<Vec<u8>>, BTreeSet<String>), AccountsError> {
    match crate::fsutil::read_config_file(path, crate::envelope::ACCOUNTS_MAX) {
        Ok(bytes) => {
            let keys = lsearch_keys(&bytes).map(|k| String::from_utf8_lossy(k).to_ascii_lowercase()).collect();
            Ok((Some(bytes), keys))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok((None, BTreeSet::new())),
        Err(err) => Err(AccountsError::Read { path: path.to_path_buf(), err }),
    }
}

/// The comment line that keeps the file's earlier sizes (Exim's lsearch skips `#` lines).
const SIZES: &str = "# mailkeep accounts sync, sizes before (for --max-shrink):";
/// How long an earlier size counts for the shrink check.
pub const SIZES_DAYS: i64 = 30;

/// Whether `day` is one of the last `SIZES_DAYS` days up to `today`.
fn recent(today: i64, day: i64) -> bool {
    (0..=SIZES_DAYS).contains(&(today - day))
}

/// Earlier sizes of the file: `(day, entries)`, the day (since 1970) a list of that many
/// entries was replaced by a smaller one; newest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sizes(pub Vec<(i64, usize)>);

impl Sizes {
    /// The sizes the file's comment line lists; nothing when there is none (or it is garbled).
    pub fn parse(bytes: &[u8]) -> Sizes {
        let text = String::from_utf8_lossy(bytes);
        let Some(line) = text.lines().find_map(|l| l.strip_prefix(SIZES)) else { return Sizes::default() };
        Sizes(line.split_whitespace().filter_map(parse_size).collect())
    }

    /// The largest size of the last `SIZES_DAYS` days before `today` (a day `SIZES_DAYS` ago
    /// counts, one day older does not), with its day. A day after today (a clock that was
    /// wrong) does not count: it would never age out.
    pub fn largest_since(&self, today: i64) -> Option<(i64, usize)> {
        self.0.iter().copied().filter(|&(day, _)| recent(today, day)).max_by_key(|&(day, n)| (n, day))
    }

    /// The sizes to keep once a list of `new` entries replaces one of `old` today: a larger
    /// earlier size of the last 30 days, and `old` itself when the list shrinks. Smaller ones
    /// add nothing (a later, larger size is already listed).
    pub fn after(&self, today: i64, old: usize, new: usize) -> Sizes {
        let mut kept: Vec<(i64, usize)> =
            self.0.iter().copied().filter(|&(day, n)| recent(today, day) && n > new).collect();
        if old > new {
            kept.push((today, old));
        }
        kept.sort_by(|a, b| b.cmp(a));
        // One size a day, the largest.
        kept.dedup_by_key(|&mut (day, _)| day);
        Sizes(kept)
    }
}

fn parse_size(word: &str) -> Option<(i64, usize)> {
    let (date, n) = word.split_once('=')?;
    let mut ymd = date.splitn(3, '-').map(str::parse::<u32>);
    let (y, m, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    Some((crate::time::days_from_civil(i64::from(y), m, d)?, n.parse().ok()?))
}

/// One entry a line, in the set's (sorted) order, after the comment line with the earlier sizes.
pub fn render(entries: &BTreeSet<String>, sizes: &Sizes) -> Vec<u8> {
    let mut out = Vec::new();
    if !sizes.0.is_empty() {
        out.extend_from_slice(SIZES.as_bytes());
        for (day, n) in &sizes.0 {
            out.extend_from_slice(format!(" {}={n}", day_name(*day)).as_bytes());
        }
        out.push(b'\n');
    }
    for e in entries {
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    out
}

/// `YYYY-MM-DD` of a day since 1970.
pub fn day_name(day: i64) -> String {
    crate::time::format_time(day * 86400)[..10].to_string()
}

/// Replaces `path` with `content` in one atomic step (`fsutil::replace_file`), keeping the
/// old file's mode and, when we run as root, its owner; a new file gets 0644 so that Exim
/// can read it. A failure leaves the old file as it was.
pub fn replace(path: &Path, content: &[u8]) -> Result<(), AccountsError> {
    let failed = |err| AccountsError::Write { path: path.to_path_buf(), err };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| failed(std::io::Error::other("names no file")))?;
    let dir = OwnedFd::from(File::open(dir).map_err(failed)?);
    let old = std::fs::metadata(path).ok();
    let mode = old.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
    // Only root may give a file away; anyone else keeps the file as their own.
    let owner = old.filter(|_| nix::unistd::geteuid().is_root()).map(|m| (m.uid(), m.gid()));
    crate::fsutil::replace_file(dir.as_fd(), name, content, mode, owner).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_entry_a_line_sorted() {
        let set: BTreeSet<String> = ["bob", "alice"].map(String::from).into();
        assert_eq!(render(&set, &Sizes::default()), b"alice\nbob\n");
        assert_eq!(render(&BTreeSet::new(), &Sizes::default()), b"");
    }

    #[test]
    fn sizes_round_trip_through_the_comment_line_that_lsearch_skips() {
        let day = crate::time::days_from_civil(2026, 12, 4).unwrap();
        let sizes = Sizes(vec![(day, 100), (day - 3, 120)]);
        let set: BTreeSet<String> = ["alice"].map(String::from).into();
        let bytes = render(&set, &sizes);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text, format!("{SIZES} 2026-12-04=100 2026-12-01=120\nalice\n"));
        assert_eq!(Sizes::parse(&bytes), sizes);
        assert_eq!(lsearch_keys(&bytes).collect::<Vec<_>>(), [b"alice"]);
    }

    #[test]
    fn only_sizes_of_the_last_30_days_count() {
        let today = 20_000;
        let sizes = Sizes(vec![(today - 30, 100), (today - 31, 200)]);
        assert_eq!(sizes.largest_since(today), Some((today - 30, 100)));
        assert_eq!(sizes.largest_since(today + 1), None);
        // Shrinking from 95 to 90 keeps 100 (larger, recent) and adds 95; 200 is too old.
        assert_eq!(sizes.after(today, 95, 90), Sizes(vec![(today, 95), (today - 30, 100)]));
        // Growing past every earlier size leaves none.
        assert_eq!(sizes.after(today, 95, 150), Sizes::default());
        // A day after today (a wrong clock) neither counts nor is kept: it would never age.
        let future = Sizes(vec![(today + 400, 500)]);
        assert_eq!(future.largest_since(today), None);
        assert_eq!(future.after(today, 95, 90), Sizes(vec![(today, 95)]));
    }

    /// Issue 18 review: a FIFO as the accounts file hung `accounts sync` (and a delivery
    /// with `--accounts`); it is refused at once.
    #[test]
    fn a_fifo_as_the_accounts_file_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(read_current(&path), Err(AccountsError::Read { .. })));
    }

    #[test]
    fn replace_keeps_the_old_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        replace(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn current_keys_follow_lsearch_rules_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts");
        assert_eq!(read_current(&path).unwrap(), (None, BTreeSet::new()));
        std::fs::write(&path, "# list\nAlice\nbob: x\n").unwrap();
        let keys: Vec<String> = read_current(&path).unwrap().1.into_iter().collect();
        assert_eq!(keys, ["alice", "bob"]);
    }
}
