//! mailkeep: keeps a durable, IMAP-servable Maildir backup of every mail a relay passes.
//! `main` only parses, runs the command, and turns its one result into one exit status.
#![no_main]

use std::ffi::OsString;

use mailkeep::exit::{Exit, classify};
use mailkeep::{cli, commands, log};

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
            log::stderr_line(first.trim_start_matches("error: "));
            return Exit::Usage;
        }
    };
    commands::run(cli.command).unwrap_or_else(|e| {
        log::stderr_line(&format!("{e:#}"));
        classify(&e)
    })
}

/// The process entry, in place of Rust's own start-up (`mailkeep::start`).
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    mailkeep::start::main(entry)
}
