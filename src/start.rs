//! Process start-up in place of Rust's own (the binary is `no_main`), and the panic hook.
//!
//! A delivery is one process per message, so start-up is part of every delivery's cost;
//! Rust's runtime start-up reads /proc/self/maps (to place a stack-overflow guard) and sets
//! up an alternate signal stack, about a sixth of mailkeep's start-up, for a message
//! ("stack overflow") that a signal status tells Exim as well. What of it we rely on is
//! done here.

use std::ffi::OsString;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use crate::exit::{Exit, Family};

/// Runs `entry` on the process's arguments as the C `main` of the binary, and returns the
/// process's exit status (`entry`'s).
pub fn main(entry: fn(Vec<OsString>) -> u8) -> libc::c_int {
    // Before (or without) a command: 75, which every family reads as "try again".
    let temporary = Exit::TempFail.code(Family::Delivery);
    if !start_like_std() {
        return temporary.into();
    }
    // A panic is a bug, but it must still end as "try again later", never as a bounce; and
    // like every failure it is one line on stderr (Exim logs the first line).
    panic::set_hook(Box::new(|info| {
        let what = info.payload_as_str().unwrap_or("panic");
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        crate::log::stderr_line(&format!("internal error (bug): {what}{place}"));
    }));
    let args: Vec<OsString> = std::env::args_os().collect();
    // A panic in `status` is UNKNOWN (3) to the monitoring system, in every other command 75.
    let panicked = Exit::TempFail.code(Family::of(args.get(1).map(OsString::as_os_str)));
    let status = panic::catch_unwind(AssertUnwindSafe(|| entry(args)));
    let _ = std::io::stdout().flush();
    status.unwrap_or(panicked).into()
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
