//! `mailkeep hold`: places, releases and lists legal holds (`holds.rs`); each hold and
//! release is written into the audit log first.

use super::{RetentionError, Session, print};
use crate::audit::Entry;
use crate::cli::HoldArgs;
use crate::commands::Error;
use crate::envelope::User;
use crate::exit::Exit;
use crate::holds::{self, Hold};
use crate::log::escape;

pub fn run(args: &HoldArgs) -> Result<Exit, Error> {
    if args.list {
        return list(args);
    }
    let usage = |what: &str| Error::from(RetentionError::Usage(what.into()));
    let user = User::parse(args.user.as_deref().ok_or_else(|| usage("--user is required"))?)
        .map_err(|e| RetentionError::Usage(e.to_string()))?;
    let user = user.as_str();
    let reason = args.reason.as_deref().unwrap_or_default();
    if reason.trim().is_empty() {
        return Err(usage("--reason must say why (a case, a ticket)"));
    }
    let session = Session::open(&args.root, args.allow_root, false)?;
    let mut now = session.holds()?;
    let held = now.of(user).cloned();
    let shown = escape(user);
    match (args.release, held) {
        (false, Some(h)) => print(&format!("user={shown} is on hold already since {}; nothing changed\n", h.since))?,
        (true, None) => print(&format!("user={shown} is not on hold; nothing changed\n"))?,
        (false, None) => {
            let entry = Entry::now("hold", user, Some(reason), None, Vec::new());
            session.record(&entry)?;
            let hold = Hold {
                user: user.to_string(),
                since: entry.time.clone(),
                uid: entry.uid,
                sudo_user: entry.sudo_user.clone(),
                reason: reason.to_string(),
            };
            now.holds.push(hold);
            holds::write(std::os::fd::AsFd::as_fd(&session.state), &now, session.files)?;
            print(&format!("user={shown} is on legal hold: expire and erase leave its mail alone\n"))?;
        }
        (true, Some(_)) => {
            session.record(&Entry::now("release", user, Some(reason), None, Vec::new()))?;
            now.holds.retain(|h| h.user != user);
            holds::write(std::os::fd::AsFd::as_fd(&session.state), &now, session.files)?;
            print(&format!("user={shown} is released from its legal hold\n"))?;
        }
    }
    Ok(Exit::Ok)
}

/// `hold --list`: one line per hold; reads only (no lock, nothing created).
fn list(args: &HoldArgs) -> Result<Exit, Error> {
    let (_root, state) = super::open_state(&args.root)?;
    let mut text = String::new();
    for h in holds::read(std::os::fd::AsFd::as_fd(&state))?.holds {
        let by = h.sudo_user.as_deref().map_or(format!("uid {}", h.uid), |s| format!("{} (uid {})", escape(s), h.uid));
        text += &format!("user={} since={} by={by} reason={}\n", escape(&h.user), h.since, escape(&h.reason));
    }
    print(&text)?;
    Ok(Exit::Ok)
}
