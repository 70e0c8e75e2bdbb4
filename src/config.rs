//! Resolved settings: the command line plus Exim's environment, validated, so the
//! commands below work only with values that are known to be safe.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::cli::{DeliverArgs, Direction, StoreArgs};
use crate::commands::Error;
use crate::envelope::{Sender, User};
use crate::exit::{Classify, Exit};
use crate::log::LogTarget;
use crate::maildir::{FolderKind, Perms};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("refusing to run as root: the backup's files must belong to the IMAP user (use --allow-root to override)")]
    RunningAsRoot,
}

impl Classify for ConfigError {
    fn exit(&self) -> Exit {
        Exit::Config
    }
}

/// Where and as whom a command stores.
#[derive(Debug)]
pub struct StoreConfig {
    pub root: PathBuf,
    pub user: User,
    pub perms: Perms,
    pub log: LogTarget,
    /// The root's id (root.json), which a `--dedup-store` records and checks.
    pub root_id: String,
}

impl StoreConfig {
    pub fn resolve(args: &StoreArgs) -> Result<StoreConfig, Error> {
        if nix::unistd::geteuid().is_root() && !args.allow_root {
            return Err(ConfigError::RunningAsRoot.into());
        }
        let user = User::parse(&args.user)?;
        if let Some(accounts) = &args.accounts {
            user.check_listed(accounts)?;
        }
        // Before anything is created: an empty mount point is no backup root (issue 20).
        let marker = crate::root::require(&args.root)?;
        let perms = Perms { shared_group: args.shared_group };
        perms.apply_umask();
        Ok(StoreConfig { root: args.root.clone(), user, perms, log: args.log, root_id: marker.id })
    }
}

/// One delivery's settings.
#[derive(Debug)]
pub struct DeliverConfig {
    pub store: StoreConfig,
    pub folder: FolderKind,
    /// `None`: not given anywhere; the From_ line's address, else the null sender.
    pub sender: Option<Sender>,
    pub rcpts: Vec<Vec<u8>>,
    /// `Some(window in days)` with `--dedup`.
    pub dedup_window: Option<u32>,
    /// Where the store of `--dedup` is (the root's own or `--dedup-store`).
    pub dedup_store: crate::dedup::Location,
}

impl DeliverConfig {
    pub fn resolve(args: &DeliverArgs) -> Result<DeliverConfig, Error> {
        let store = StoreConfig::resolve(&args.store)?;
        let env = |name: &str| std::env::var_os(name);
        let sender = args.sender.clone().or_else(|| env("SENDER")).map(|s| Sender::from_bytes(s.as_bytes()));
        let given: Vec<OsString> = args.rcpt.iter().chain(&args.recipients).cloned().collect();
        let rcpts: Vec<OsString> = if given.is_empty() {
            env("RECIPIENT").filter(|r| !r.is_empty() && r != "@").into_iter().collect()
        } else {
            given
        };
        // Only a store that is used is looked at: a MAILKEEP_DEDUP_STORE for the admin
        // commands does not stop deliveries without --dedup.
        let dedup_store = match args.dedup.dedup {
            true => crate::dedup::Location::new(&args.store.root, args.dedup.dedup_store.as_deref())?,
            false => crate::dedup::Location::InRoot(args.store.root.clone()),
        };
        let folder = match args.direction {
            Direction::In => FolderKind::Inbox,
            Direction::Out => FolderKind::Sent,
        };
        Ok(DeliverConfig {
            store,
            folder,
            sender,
            rcpts: rcpts.iter().map(|r| r.as_bytes().to_vec()).collect(),
            dedup_window: args.dedup.dedup.then_some(args.dedup.dedup_window),
            dedup_store,
        })
    }
}
