//! Whether a backup root is initialised (and so mounted): the marker `mailkeep init` writes.
//!
//! (The status helper's stand-in with the agreed API; the init helper's version replaces it.)

use std::os::fd::AsFd;
use std::path::Path;

use crate::fsutil::{self, OpenError};

pub const STATE_DIR: &str = ".mailkeep";
pub const MARKER: &str = "root.json";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    pub id: String,
    pub created: i64,
}

#[derive(Debug)]
pub enum RootState {
    /// ROOT/.mailkeep/root.json is a regular file that parses.
    Initialised(Marker),
    /// ROOT itself does not exist (or is not a directory).
    Missing,
    /// ROOT exists but has no marker.
    NotInitialised,
}

/// Looks at ROOT without creating anything and without following a symlink below it. A
/// marker that is there but unreadable or does not parse is an error (InvalidData).
pub fn state(root: &Path) -> std::io::Result<RootState> {
    let root_fd = match fsutil::open_dir_path(root) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => return Ok(RootState::Missing),
        Err(e) => return Err(e),
    };
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let state_dir = match fsutil::open_dir(root_fd.as_fd(), STATE_DIR) {
        Ok(fd) => fd,
        Err(OpenError::Missing) => return Ok(RootState::NotInitialised),
        Err(e) => return Err(invalid(format!("{STATE_DIR}: {e}"))),
    };
    match fsutil::read_small(state_dir.as_fd(), MARKER, 64 * 1024) {
        Ok(None) => Ok(RootState::NotInitialised),
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map(RootState::Initialised)
            .map_err(|e| invalid(format!("{STATE_DIR}/{MARKER}: {e}"))),
        Err(e) => Err(invalid(format!("{STATE_DIR}/{MARKER}: {e}"))),
    }
}
