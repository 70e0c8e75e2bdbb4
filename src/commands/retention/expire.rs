//! `mailkeep expire`: removes messages older than a retention period, from every user or
//! one, skipping users on legal hold (said on stdout; a hold doing its job is no failure,
//! so the daily timer stays green). A user or folder that cannot be read (a symlink, a
//! permission) is said and skipped, and the others are still expired (exit 1).

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{SFlag, fstatat};

use super::{Incomplete, Job, RetentionError, Session, folders, print};
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
    // `parse_retention` took whole days, weeks or years, at least a day.
    let age = args.older_than.as_secs();
    // A retention period in whole years is said in years (`7y`), as it was set.
    let year = 365 * 86400;
    let period = if age.is_multiple_of(year) { format!("{}y", age / year) } else { crate::time::format_age(age) };
    let cutoff = crate::time::now().saturating_sub(i64::try_from(age).unwrap_or(i64::MAX));
    let session = Session::open(&args.root, args.removal.allow_root, args.removal.dry_run)?;
    let holds = session.holds()?;
    let incomplete = if args.removal.dry_run { Incomplete::new() } else { session.incomplete()? };
    let store = if args.removal.dry_run { None } else { session.dedup_store(args.removal.dedup_store.as_deref())? };
    let selection = Selection { before: Some(cutoff), message_id: None };
    let reason = format!("retention: older than {period} (before {})", crate::time::format_time(cutoff));
    let job = Job {
        command: "expire",
        done_word: "expired",
        reason: Some(&reason),
        selection: &selection,
        dry_run: args.removal.dry_run,
        incomplete: &incomplete,
        dedup: store.as_ref(),
        forget_user: false,
    };
    let users = match &only {
        Some(u) => vec![u.as_str().to_string()],
        None => users(&session)?,
    };
    let mut total = Total::default();
    for user in users {
        if let Some(hold) = holds.of(&user) {
            let (since, why) = (&hold.since, escape(&hold.reason));
            print(&format!("skipped user={}: on legal hold since {since} ({why})\n", escape(&user)))?;
            continue;
        }
        match session.user_dir(&user) {
            Ok(Some(user_dir)) => expire_user(&session, &job, &user, &user_dir, folders(args.folder), &mut total)?,
            Ok(None) => {}
            Err(Error::Retention(RetentionError::Removal(e))) if refused(&e) => {
                crate::log::stderr_line(&format!("skipped user={}: {e}", escape(&user)));
                total.refused += 1;
            }
            Err(e) => return Err(e),
        }
    }
    let verb = if args.removal.dry_run { "would expire" } else { "expired" };
    let mut line = format!(
        "{verb} {} messages older than {period} (before {})",
        total.found.saturating_sub(total.failed),
        crate::time::format_time(cutoff)
    );
    if total.future > 0 {
        line += &format!(
            "; {} messages dated in the future were left (no age selects them: check the clock that dated them)",
            total.future
        );
    }
    print(&(line + "\n"))?;
    Ok(if total.failed + total.refused == 0 { Exit::Ok } else { Exit::Problems })
}

/// What a run came to, over every user and folder.
#[derive(Default)]
struct Total {
    found: usize,
    failed: usize,
    /// Users and folders skipped for a symlink, a non-directory or a permission.
    refused: usize,
    future: usize,
}

/// Whether `e` is one user's or folder's trouble, for the admin to fix, that must not stop
/// every other user's retention: said, counted as a failure (exit 1), and the run goes on.
fn refused(e: &RemovalError) -> bool {
    match e {
        RemovalError::Symlink(_) | RemovalError::NotADirectory(_) => true,
        RemovalError::Io { errno, .. } => matches!(errno, Errno::EACCES | Errno::EPERM),
    }
}

/// One user's folders, each on its own: a folder refused is said and the next one is done.
fn expire_user(
    session: &Session,
    job: &Job<'_>,
    user: &str,
    user_dir: &OwnedFd,
    kinds: Vec<FolderKind>,
    total: &mut Total,
) -> Result<(), Error> {
    for kind in kinds {
        match session.folder(job, user, user_dir, kind) {
            Ok(done) => {
                total.found += done.found;
                total.failed += done.failed;
                total.future += done.future;
            }
            Err(Error::Retention(RetentionError::Removal(e))) if refused(&e) => {
                crate::log::stderr_line(&format!("skipped user={} folder={}: {e}", escape(user), kind.name()));
                total.refused += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
/// Every user directory below the root (`maildir::users`); a symlink or a file under a
/// user's name is no Maildir and is left alone.
fn users(session: &Session) -> Result<Vec<String>, Error> {
    let list_err = |errno| RemovalError::Io { op: "list", path: session.root.clone(), errno };
    let mut users = crate::maildir::users(session.root_fd.as_fd()).map_err(list_err)?;
    users.retain(|user| {
        let st = fstatat(session.root_fd.as_fd(), user.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW);
        st.is_ok_and(|st| fsutil::file_type(&st) == SFlag::S_IFDIR)
    });
    Ok(users)
}
