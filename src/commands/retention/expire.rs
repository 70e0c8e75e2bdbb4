//! `mailkeep expire`: removes messages older than a retention period, from every user or
//! one, skipping users on legal hold (said on stdout; a hold doing its job is no failure,
//! so the daily timer stays green).

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::AtFlags;
use nix::sys::stat::{SFlag, fstatat};

use super::{Job, Recorded, RetentionError, Session, folders, print};
use crate::cli::ExpireArgs;
use crate::commands::Error;
use crate::envelope::User;
use crate::exit::Exit;
use crate::fsutil;
use crate::log::escape;
use crate::maildir::FolderKind;
use crate::removal::{RemovalError, Selection};

pub fn run(args: &ExpireArgs) -> Result<Exit, Error> {
    let only = match &args.user {
        Some(u) => Some(User::parse(u).map_err(|e| RetentionError::Usage(e.to_string()))?),
        None => None,
    };
    let age = args.older_than.as_secs();
    if age == 0 {
        return Err(RetentionError::Usage("--older-than 0s would remove every message".into()).into());
    }
    // A retention period in whole years is said in years (`7y`), as it was set.
    let year = 365 * 86400;
    let period = if age.is_multiple_of(year) { format!("{}y", age / year) } else { crate::time::format_age(age) };
    let cutoff = crate::time::now().saturating_sub(i64::try_from(age).unwrap_or(i64::MAX));
    let session = Session::open(&args.root, args.allow_root, args.dry_run)?;
    let holds = session.holds()?;
    let recorded = if args.dry_run { Recorded::new() } else { session.recorded()? };
    let selection = Selection { before: Some(cutoff), message_id: None };
    let reason = format!("retention: older than {period} (before {})", crate::time::format_time(cutoff));
    let job = Job {
        command: "expire",
        done_word: "expired",
        reason: Some(&reason),
        selection: &selection,
        dry_run: args.dry_run,
        recorded: &recorded,
    };
    let users = match &only {
        Some(u) => vec![u.as_str().to_string()],
        None => users(&session)?,
    };
    let (mut found, mut failed, mut refused) = (0, 0, 0);
    for user in users {
        if let Some(hold) = holds.of(&user) {
            let (since, why) = (&hold.since, escape(&hold.reason));
            print(&format!("skipped user={}: on legal hold since {since} ({why})\n", escape(&user)))?;
            continue;
        }
        match expire_user(&session, &job, &user, folders(args.folder)) {
            Ok((f, e)) => (found, failed) = (found + f, failed + e),
            // A symlink planted in one user's Maildir must not stop every other user's
            // retention: said, counted as a failure (exit 1), and the run goes on.
            Err(Error::Retention(RetentionError::Removal(
                e @ (RemovalError::Symlink(_) | RemovalError::NotADirectory(_)),
            ))) => {
                crate::log::stderr_line(&format!("skipped user={}: {e}", escape(&user)));
                refused += 1;
            }
            Err(e) => return Err(e),
        }
    }
    let verb = if args.dry_run { "would expire" } else { "expired" };
    print(&format!(
        "{verb} {} messages older than {period} (before {})\n",
        found - failed,
        crate::time::format_time(cutoff)
    ))?;
    Ok(if failed + refused == 0 { Exit::Ok } else { Exit::Problems })
}

/// One user's folders: how many messages were found, and how many of them failed to go.
fn expire_user(session: &Session, job: &Job<'_>, user: &str, kinds: Vec<FolderKind>) -> Result<(usize, usize), Error> {
    let Some(user_dir) = session.user_dir(user)? else { return Ok((0, 0)) };
    let (mut found, mut failed) = (0, 0);
    for kind in kinds {
        let done = session.folder(job, user, &user_dir, kind)?;
        found += done.found;
        failed += done.failed;
    }
    Ok((found, failed))
}

/// Every user directory below the root, by name (what `deliver` would name one), sorted;
/// a symlink or a file under a user's name is no Maildir and is left alone.
fn users(session: &Session) -> Result<Vec<String>, Error> {
    let list_err = |errno| RemovalError::Io { op: "list", path: session.root.clone(), errno };
    let mut users = Vec::new();
    for entry in fsutil::list_dir(session.root_fd.as_fd()).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let name = entry.file_name().to_bytes();
        let Ok(user) = User::parse(OsStr::from_bytes(name)) else { continue };
        if user.as_str().as_bytes() != name {
            continue;
        }
        let st = fstatat(session.root_fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW);
        if st.is_ok_and(|st| fsutil::file_type(&st) == SFlag::S_IFDIR) {
            users.push(user.as_str().to_string());
        }
    }
    users.sort();
    Ok(users)
}
