//! `mailkeep erase`: removes all or the matching messages of one user, and the user's dedup
//! keys, for a departed employee or a data subject's request. A user on legal hold is
//! refused (exit 1) before anything is looked at.

use super::{Job, Recorded, RetentionError, Session, folders, print};
use crate::cli::EraseArgs;
use crate::commands::Error;
use crate::dedup::Store;
use crate::envelope::User;
use crate::exit::Exit;
use crate::log::escape;
use crate::message::normalise_message_id;
use crate::removal::Selection;

pub fn run(args: &EraseArgs) -> Result<Exit, Error> {
    let user = User::parse(&args.user).map_err(|e| RetentionError::Usage(e.to_string()))?;
    let user = user.as_str();
    if args.reason.trim().is_empty() {
        return Err(RetentionError::Usage("--reason must say why (a ticket, a request)".into()).into());
    }
    let message_id = args.message_id.as_deref().map(normalise_message_id);
    if message_id.as_deref() == Some("") {
        return Err(RetentionError::Usage("--message-id is empty".into()).into());
    }
    let session = Session::open(&args.root, args.allow_root, args.dry_run)?;
    // A bad --dedup-store is said before anything is removed.
    let store = crate::dedup::Location::new(&session.root, args.dedup_store.as_deref())?;
    if let Some(hold) = session.holds()?.of(user) {
        let (since, reason) = (hold.since.clone(), hold.reason.clone());
        return Err(RetentionError::Held { user: user.to_string(), since, reason }.into());
    }
    let Some(user_dir) = session.user_dir(user)? else {
        return Err(RetentionError::NoSuchUser { user: user.to_string(), root: args.root.clone() }.into());
    };
    let recorded = if args.dry_run { Recorded::new() } else { session.recorded()? };
    let selection = Selection { before: args.before, message_id: message_id.clone() };
    let job = Job {
        command: "erase",
        done_word: "erased",
        reason: Some(&args.reason),
        selection: &selection,
        dry_run: args.dry_run,
        recorded: &recorded,
    };
    let (mut found, mut failed, mut removed) = (0, 0, Vec::new());
    for kind in folders(None) {
        let done = session.folder(&job, user, &user_dir, kind)?;
        found += done.found;
        failed += done.failed;
        removed.extend(done.removed);
    }
    let keys = if args.dry_run { 0 } else { forget_keys(&session, &store, user, &removed, &selection)? };
    let verb = if args.dry_run { "would erase" } else { "erased" };
    let mut line = format!("{verb} {} messages of user={}", found - failed, escape(user));
    if !args.dry_run {
        line += &format!("; {keys} dedup keys forgotten");
    }
    print(&(line + "\n"))?;
    Ok(if failed == 0 { Exit::Ok } else { Exit::Problems })
}

/// Forgets the dedup keys of what was erased: all of the user's when nothing narrowed the
/// erase, else those of the removed files (and of the Message-ID). No store: none to forget.
fn forget_keys(
    session: &Session,
    at: &crate::dedup::Location,
    user: &str,
    removed: &[crate::removal::Found],
    selection: &Selection,
) -> Result<usize, Error> {
    let root_id = crate::root::require_existing(&session.root)?.id;
    let Some(store) = Store::open_existing(at, 30, &root_id)? else { return Ok(0) };
    if selection.before.is_none() && selection.message_id.is_none() {
        return Ok(store.forget_user(user)?);
    }
    let mut n = 0;
    for f in removed {
        n += store.forget(user, f.folder.name(), f.base())?;
    }
    if let Some(id) = &selection.message_id {
        n += store.forget_message_id(user, id)?;
    }
    Ok(n)
}
