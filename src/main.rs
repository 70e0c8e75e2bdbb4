//! mailkeep: keeps a durable, IMAP-servable Maildir backup of every mail a relay passes.
//! `main` only parses, runs the command, and turns its one result into one exit status.
#![no_main]

use std::ffi::OsString;

use mailkeep::exit::{Classify, Family};
use mailkeep::{cli, commands, log};

/// Parses the command line and runs the command: one result, one exit status, in the
/// convention of the command's family (sysexits for deliver and replay, `exit.rs`).
fn entry(args: Vec<OsString>) -> u8 {
    let family = Family::of(args.get(1).map(OsString::as_os_str));
    let outcome = cli::parse(args).and_then(|cli| {
        commands::run(cli.command).map_err(|e| {
            log::stderr_line(&e.to_string());
            e.exit()
        })
    });
    outcome.unwrap_or_else(|exit| exit).code(family)
}

/// The process entry, in place of Rust's own start-up (`mailkeep::start`).
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    mailkeep::start::main(entry)
}
