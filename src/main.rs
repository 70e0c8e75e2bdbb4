//! mailkeep: keeps a durable, IMAP-servable Maildir backup of every mail an Exim relay
//! passes. `main` only turns the one result of a command into one exit status.
#![cfg_attr(not(test), no_main)]
// The unit-test build has no entry point (`main` below is not(test)), so everything reached
// only from it would be reported unused there.
#![cfg_attr(test, allow(dead_code, unused_imports))]

mod accounts;
mod check;
mod cli;
mod config;
mod dedup;
mod deliver;
mod docs;
mod envelope;
mod exit;
mod fault;
mod fsutil;
mod log;
mod maildir;
mod mbox;
mod message;
#[cfg(test)]
mod proptests;
mod replay;
mod serve_config;
mod time;

use std::ffi::OsString;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use crate::cli::{Cli, Command};
use crate::exit::{Classify, Exit};

fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Deliver(args) => {
            let cfg = config::DeliverConfig::resolve(&args)?;
            let logger = log::Logger::new(cfg.store.log);
            deliver::run(&cfg, &mut std::io::stdin().lock(), &logger)?;
            Ok(Exit::Ok)
        }
        Command::Replay(args) => replay::run(&args),
        Command::Dedup(cmd) => dedup::admin(&cmd),
        Command::Check(args) => check::run(&args),
        Command::ServeConfig(args) => serve_config::run(&args),
        Command::Accounts(cli::AccountsCommand::Sync(args)) => accounts::sync(&args),
        Command::Generate(args) => docs::generate(&args),
    }
}

/// The status for an error chain: the first error in it that classifies itself wins;
/// an error nobody classified is unknown, and unknown means temporary.
fn classify(err: &anyhow::Error) -> Exit {
    macro_rules! first_of {
        ($cause:ident: $($t:ty),+) => { $(if let Some(e) = $cause.downcast_ref::<$t>() { return e.exit(); })+ };
    }
    for cause in err.chain() {
        first_of!(cause:
            crate::envelope::EnvelopeError,
            crate::maildir::MaildirError,
            crate::deliver::DeliverError,
            crate::cli::UsageError,
            crate::dedup::DedupError,
            crate::mbox::MboxError,
            crate::serve_config::ServeError,
            crate::accounts::AccountsError,
            crate::config::ConfigError
        );
    }
    Exit::TempFail
}

/// Parses the command line and runs the command: one result, one exit status.
fn entry(args: Vec<OsString>) -> Exit {
    let cli = match cli::parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return Exit::Ok;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("bad usage");
            let _ = writeln!(std::io::stderr(), "mailkeep: {}", first.trim_start_matches("error: "));
            return Exit::Usage;
        }
    };
    match run(cli) {
        Ok(status) => status,
        Err(e) => {
            let status = classify(&e);
            let _ = writeln!(std::io::stderr(), "mailkeep: {e:#}");
            status
        }
    }
}

/// The process entry, in place of Rust's own start-up (`no_main`). A delivery is one
/// process per message, so start-up is part of every delivery's cost; Rust's runtime
/// start-up reads /proc/self/maps (to place a stack-overflow guard) and sets up an
/// alternate signal stack, about a sixth of mailkeep's start-up, for a message ("stack
/// overflow") that a signal status tells Exim as well. What of it we rely on is done here.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    if !start_like_std() {
        return Exit::TempFail.code().into();
    }
    // A panic is a bug, but it must still end as "try again later", never as a bounce; and
    // like every failure it is one line on stderr (Exim logs the first line).
    panic::set_hook(Box::new(|info| {
        let what = info.payload_as_str().unwrap_or("panic");
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let line: String = format!("{what}{place}").chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let _ = writeln!(std::io::stderr(), "mailkeep: internal error (bug): {line}");
    }));
    let status = panic::catch_unwind(AssertUnwindSafe(|| entry(std::env::args_os().collect())));
    let _ = std::io::stdout().flush();
    status.unwrap_or(Exit::TempFail).code().into()
}

/// What Rust's start-up does that we need: descriptors 0 to 2 open (else the first file we
/// open would become stderr), SIGPIPE ignored (a closed pipe is an error we report, not a
/// death). And a file-size limit must be an error we report (75), not a signal that kills
/// us. Returns false when a standard descriptor cannot be opened.
fn start_like_std() -> bool {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: poll on a local array of three pollfd; signal() with SIG_IGN before any
    // thread starts; open() of a constant NUL-terminated path.
    unsafe {
        while libc::poll(fds.as_mut_ptr(), 3, 0) == -1 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return false;
            }
        }
        for pfd in fds {
            if pfd.revents & libc::POLLNVAL != 0 && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) != pfd.fd {
                return false;
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_errors_are_temporary() {
        let e = anyhow::anyhow!("something nobody classified");
        assert_eq!(classify(&e), Exit::TempFail);
    }
}
