//! `mailkeep erase`: removes all or the matching messages of one user, and the user's dedup
//! keys, for a departed employee or a data subject's request. A user on legal hold is
//! refused (exit 1) before anything is looked at. The keys are forgotten before the files
//! go (`Session::folder`), so that no crash leaves the key of an erased message.

use super::{Incomplete, Job, RetentionError, Session, folders, print};
use crate::cli::EraseArgs;
use crate::commands::Error;
use crate::envelope::User;
use crate::exit::Exit;
use crate::log::escape;
use crate::maildir::FolderKind;
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
    let session = Session::open(&args.root, args.removal.allow_root, args.removal.dry_run)?;
    // A bad --dedup-store is said before anything is removed.
    crate::dedup::Location::new(&session.root, args.removal.dedup_store.as_deref())?;
    if let Some(hold) = session.holds()?.of(user) {
        let (since, reason) = (hold.since.clone(), hold.reason.clone());
        return Err(RetentionError::Held { user: user.to_string(), since, reason }.into());
    }
    let Some(user_dir) = session.user_dir(user)? else {
        return Err(RetentionError::NoSuchUser { user: user.to_string(), root: args.root.clone() }.into());
    };
    let incomplete = if args.removal.dry_run { Incomplete::new() } else { session.incomplete()? };
    let store = if args.removal.dry_run { None } else { session.dedup_store(args.removal.dedup_store.as_deref())? };
    let selection = Selection { before: args.before, message_id: message_id.clone() };
    let job = Job {
        command: "erase",
        done_word: "erased",
        reason: Some(&args.reason),
        selection: &selection,
        dry_run: args.removal.dry_run,
        incomplete: &incomplete,
        dedup: store.as_ref(),
        forget_user: selection.before.is_none() && selection.message_id.is_none(),
    };
    let (mut found, mut failed, mut keys) = (0, 0, 0);
    for kind in folders(None) {
        let done = session.folder(&job, user, &user_dir, kind)?;
        found += done.found;
        failed += done.failed;
        keys += done.keys;
    }
    // Keys whose message no folder holds now (expunged, or folded into another copy).
    if !args.removal.dry_run {
        keys += job.forget(user, FolderKind::Inbox, Vec::new())?;
    }
    let verb = if args.removal.dry_run { "would erase" } else { "erased" };
    let mut line = format!("{verb} {} messages of user={}", found.saturating_sub(failed), escape(user));
    if !args.removal.dry_run {
        line += &format!("; {keys} dedup keys forgotten");
    }
    print(&(line + "\n"))?;
    Ok(if failed == 0 { Exit::Ok } else { Exit::Problems })
}
