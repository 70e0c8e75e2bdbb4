//! The commands: each turns its part of the command line into settings and drives the core.
//! One module (or folder) per command; none imports another.

pub mod accounts;
pub mod check;
pub mod dedup;
pub mod deliver;
mod error;
pub mod export;
pub mod generate;
pub mod init;
pub mod lmtp;
pub mod replay;
pub mod retention;
pub mod seal;
pub mod serve_config;
pub mod status;

use crate::cli::{AccountsCommand, Command};
use crate::exit::Exit;
pub use error::Error;

/// Runs the command the command line names: its outcome, or the error it ended with.
pub fn run(command: Command) -> Result<Exit, Error> {
    match command {
        Command::Init(args) => init::run(&args),
        Command::Deliver(args) => deliver::run_args(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Dedup(cmd) => dedup::run(&cmd),
        Command::Check(args) => check::run(&args),
        Command::ServeConfig(args) => serve_config::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Accounts(AccountsCommand::Sync(args)) => accounts::sync(&args),
        Command::Generate(args) => generate::generate(&args),
        Command::Expire(args) => retention::expire::run(&args),
        Command::Erase(args) => retention::erase::run(&args),
        Command::Hold(args) => retention::hold::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Seal(args) => seal::run(&args),
        Command::Lmtp(args) => lmtp::run(&args),
    }
}
