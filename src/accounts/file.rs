//! The accounts file on disk: its current entries, and its replacement in one atomic step,
//! so Exim reads either the old list or the new one, whole, and a failed sync changes nothing.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::AccountsError;
use crate::envelope::lsearch_keys;

/// The file's bytes (`None` when it does not exist yet) and its keys, lower-cased.
pub fn read_current(path: &Path) -> Result<(Option<Vec<u8>>, BTreeSet<String>), AccountsError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let keys = lsearch_keys(&bytes).map(|k| String::from_utf8_lossy(k).to_ascii_lowercase()).collect();
            Ok((Some(bytes), keys))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok((None, BTreeSet::new())),
        Err(err) => Err(AccountsError::Read { path: path.to_path_buf(), err }),
    }
}

/// One entry a line, in the set's (sorted) order.
pub fn render(entries: &BTreeSet<String>) -> Vec<u8> {
    entries.iter().flat_map(|e| [e.as_bytes(), b"\n"]).flatten().copied().collect()
}

/// Replaces `path` with `content`:
/// 1. create `.NAME.mailkeep-PID` beside it (`O_EXCL|O_NOFOLLOW`), with the old file's mode
///    and owner (when allowed), else mode 0644 so that Exim can read it;
/// 2. write and fsync it;
/// 3. rename it over `path`;
/// 4. fsync the directory, so the rename survives a crash.
///
/// Before step 3 every failure removes the temp file and leaves the old file as it was.
pub fn replace(path: &Path, content: &[u8]) -> Result<(), AccountsError> {
    let failed = |err| AccountsError::Write { path: path.to_path_buf(), err };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| failed(std::io::Error::other("names no file")))?;
    let tmp = dir.join(format!(".{}.mailkeep-{}", name.to_string_lossy(), std::process::id()));
    let old = std::fs::metadata(path).ok();
    // 1. (a temp file left by a killed run of ours with this pid is stale: remove it)
    let _ = std::fs::remove_file(&tmp);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(failed)?;
    let written = fill(&file, content, old.as_ref()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(e));
    }
    // 4.
    File::open(&dir).and_then(|d| d.sync_all()).map_err(failed)
}

/// Steps 1 (mode, owner) and 2 on the open temp file.
fn fill(mut file: &File, content: &[u8], old: Option<&std::fs::Metadata>) -> std::io::Result<()> {
    let mode = old.map_or(0o644, |m| m.permissions().mode() & 0o7777);
    if let Some(m) = old {
        // Only root may give a file away; anyone else keeps the file as their own.
        match std::os::unix::fs::fchown(file, Some(m.uid()), Some(m.gid())) {
            Err(e) if e.kind() != ErrorKind::PermissionDenied => return Err(e),
            _ => {}
        }
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(content)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_entry_a_line_sorted() {
        let set: BTreeSet<String> = ["bob", "alice"].map(String::from).into();
        assert_eq!(render(&set), b"alice\nbob\n");
        assert_eq!(render(&BTreeSet::new()), b"");
    }

    #[test]
    fn replace_keeps_the_old_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o640);
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
