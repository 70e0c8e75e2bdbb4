//! mailkeep: keeps a durable, IMAP-servable Maildir backup of every mail an Exim relay
//! passes. `main` only turns the one result of a command into one exit status.

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
mod log;
mod maildir;
mod mbox;
mod message;
#[cfg(test)]
mod proptests;
mod replay;
mod serve_config;
mod time;

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Exit;

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

fn main() -> ExitCode {
    // A file-size limit must be an error we report (75), not a signal that kills us.
    // SAFETY: setting a signal to SIG_IGN before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("bad usage");
            let _ = writeln!(std::io::stderr(), "mailkeep: {}", first.trim_start_matches("error: "));
            return Exit::Usage.into();
        }
    };
    // A panic is a bug, but it must still end as "try again later", never as a bounce.
    panic::set_hook(Box::new(|info| {
        let _ = writeln!(std::io::stderr(), "mailkeep: internal error (bug): {info}");
    }));
    match panic::catch_unwind(AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(status)) => status.into(),
        Ok(Err(e)) => {
            let status = exit::classify(&e);
            let _ = writeln!(std::io::stderr(), "mailkeep: {e:#}");
            status.into()
        }
        Err(_) => Exit::TempFail.into(),
    }
}
