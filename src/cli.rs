//! The raw command line, as clap parses it; `config.rs` turns it into resolved settings.
//!
//! The doc comments here are the `--help` text an admin reads, so each option says what
//! it does, its default and its environment variable.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::{Classify, Exit, Family};
use crate::log::LogTarget;
use crate::mbox;

#[derive(Debug, Parser)]
#[command(
    name = "mailkeep",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MAILKEEP_COMMIT"), ")"),
    about = "Keep a durable, IMAP-servable Maildir copy of every mail an Exim relay passes",
    after_help = Family::footer_of_all()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make DIR a backup root: ROOT/.mailkeep/ and its marker, without which nothing is
    /// stored (an unmounted volume's empty mount point has none). Run once, as the backup's user.
    #[command(after_help = Family::Admin.footer())]
    Init(InitArgs),
    /// Store one message read on stdin into a user's Maildir (run by Exim's pipe transport).
    #[command(after_help = Family::Delivery.footer())]
    Deliver(DeliverArgs),
    /// Store every message of mbox files (Google Takeout, older systems) into a user's Maildir.
    #[command(after_help = Family::Delivery.footer())]
    Replay(ReplayArgs),
    /// Admin commands for the Message-ID dedup store.
    #[command(subcommand, after_help = Family::Admin.footer())]
    Dedup(DedupCommand),
    /// Check that the backup is whole and servable; report every problem found.
    #[command(after_help = Family::Admin.footer())]
    Check(CheckArgs),
    /// Write a ready configuration for serving the backup with an IMAP server.
    #[command(after_help = Family::Admin.footer())]
    ServeConfig(ServeConfigArgs),
    /// Say whether the backup is working: for Icinga, Nagios and the like (the default), for
    /// Prometheus' textfile collector, or as JSON.
    #[command(after_help = Family::Status.footer())]
    Status(StatusArgs),
    /// Keep the accounts file current from the mail provider's directory.
    #[command(subcommand, after_help = Family::Admin.footer())]
    Accounts(AccountsCommand),
    /// Write the man pages or shell completions generated from this command line (packaging).
    #[command(hide = true, after_help = Family::Admin.footer())]
    Generate(GenerateArgs),
    /// Remove messages older than a retention period (INTERNALDATE: the file's mtime), each
    /// removal written into ROOT/.mailkeep/audit.log first; users on legal hold are skipped.
    #[command(after_help = Family::Admin.footer())]
    Expire(ExpireArgs),
    /// Remove all or some messages of one user and the user's dedup keys (a departed
    /// employee, a data subject's request), written into ROOT/.mailkeep/audit.log first.
    #[command(after_help = Family::Admin.footer())]
    Erase(EraseArgs),
    /// Place or release a legal hold on a user: expire and erase leave a held user's mail alone.
    #[command(after_help = Family::Admin.footer())]
    Hold(HoldArgs),
    /// Write a user's mail out of the backup as an mboxrd file or a fresh Maildir (to hand it
    /// over, or to move it into a new mailbox); nothing in the backup changes.
    #[command(after_help = Family::Admin.footer())]
    Export(ExportArgs),
    /// Seal every message not sealed yet (user, folder, name, size, SHA-256) and the audit
    /// log's new entries into the hash chain in ROOT/.mailkeep/seals; print the head digest.
    #[command(after_help = Family::Admin.footer())]
    Seal(SealArgs),
    /// Serve LMTP (RFC 2033) on a Unix socket for Exim's lmtp transport or Postfix's lmtp
    /// client: the same copies as deliver, from one long-lived process (systemd socket
    /// activation, or --listen).
    #[command(after_help = Family::Admin.footer())]
    Lmtp(LmtpArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to initialise; must exist, owned by the user mailkeep delivers as.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// Make ROOT/.mailkeep 2770 (and the marker 0660), as deliveries with --shared-group
    /// make their directories. Default: 0700 and 0600.
    #[arg(long)]
    pub shared_group: bool,

    /// Initialise a root that already holds data without a marker (a backup an earlier
    /// mailkeep filled). Default: refuse a non-empty DIR with exit 2 (a wrong path, or a
    /// volume mounted somewhere else).
    #[arg(long)]
    pub adopt: bool,

    /// Allow running as root (ROOT/.mailkeep would belong to root, and deliveries with
    /// --dedup, which keep their store there, could not write it). Default: refuse with exit 2.
    #[arg(long)]
    pub allow_root: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// mailkeep.1 and one page per subcommand (mailkeep-deliver.1, ...).
    Man,
    /// bash and zsh completions.
    Completions,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(value_enum)]
    pub what: Generated,
    /// The directory to write into (created if missing).
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Rewrite the accounts file from Google Workspace's Directory API (service account with
    /// domain-wide delegation; no user password is ever used).
    #[command(after_help = Family::Admin.footer())]
    Sync(AccountsSyncArgs),
}

#[derive(Debug, Args)]
pub struct AccountsSyncArgs {
    /// The service account's JSON key file; must not be readable by others (else exit 2).
    #[arg(long, value_name = "FILE")]
    pub google_key: PathBuf,

    /// A Workspace admin the service account acts for (domain-wide delegation subject).
    #[arg(long, value_name = "ADMIN@DOMAIN")]
    pub admin: String,

    /// The mail domain: only addresses of this domain become entries.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,

    /// The accounts file to write (atomically: temp file, fsync, rename).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Also list users' alias addresses. Default: primary addresses only.
    #[arg(long)]
    pub include_aliases: bool,

    /// Also list groups' addresses. Default: users only.
    #[arg(long)]
    pub include_groups: bool,

    /// Refuse a result that removes more than this share of the current entries, or that has
    /// this share fewer entries than the file had at any time in the last 30 days (e.g. 10%).
    #[arg(long, value_name = "PERCENT", default_value = "10%")]
    pub max_shrink: String,

    /// Write even a result that shrinks the file more than --max-shrink; its size becomes the
    /// new reference for the shrink check.
    #[arg(long)]
    pub force: bool,

    /// Read at most this many pages of each list (500 users or 200 groups a page); a server
    /// that still has more after them is an error (exit 75), not an endless sync.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pages: u32,

    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Base URL of the Directory API and token endpoint (for tests). Default: Google's.
    #[arg(long, value_name = "URL")]
    pub api_base: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// Received mail: the user's INBOX.
    In,
    /// Mail the user sent: the Maildir++ folder `.Sent`.
    Out,
}

/// Options every command that writes into the backup shares.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The backup root; user NAME's Maildir is ROOT/NAME/. Must be initialised (`mailkeep
    /// init`); without its marker (an unmounted volume) nothing is stored and the exit is 75.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// The mailbox owner, as Exim passes it: lower-cased, 1 to 64 of [a-z0-9.-_+=], not starting
    /// with a dot. Anything else exits 67 and writes nothing.
    // A name may start with `-` (an Exim local part may): it is this option's value all the same.
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub user: OsString,

    /// Exim lsearch file of accepted users (one name per line, optional `: data`, # comments);
    /// a user not listed exits 67. Default: no list, any safe name is accepted.
    #[arg(long, value_name = "FILE")]
    pub accounts: Option<PathBuf>,

    /// Make directories 2770 and files 0660 so a group (e.g. the IMAP server's) shares them.
    /// Default: 0700 and 0600, owned by the delivering user only.
    #[arg(long)]
    pub shared_group: bool,

    /// Where the one line per message goes.
    #[arg(long, value_enum, default_value_t = LogTarget::Syslog)]
    pub log: LogTarget,

    /// Allow running as root (files would belong to root, which IMAP servers then cannot
    /// change). Default: refuse with exit 78.
    #[arg(long)]
    pub allow_root: bool,
}

#[derive(Debug, Args)]
pub struct DeliverArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// `in` stores into the INBOX, `out` into the `.Sent` folder.
    #[arg(long, value_enum)]
    pub direction: Direction,

    /// Envelope recipients (one or more values). Default: env RECIPIENT. An address that
    /// starts with `-` must go after `--` instead.
    #[arg(long, value_name = "ADDR", num_args = 1.., action = clap::ArgAction::Append)]
    pub rcpt: Vec<OsString>,

    /// Envelope recipients after `--`, taken as they are: Exim's $pipe_addresses goes here,
    /// since a local part may start with `-` and must never be read as an option.
    #[arg(last = true, value_name = "ADDR")]
    pub recipients: Vec<OsString>,

    /// Envelope sender. Default: env SENDER (empty means the null sender <>), else the
    /// address of a leading From_ line.
    #[arg(long, value_name = "ADDR")]
    pub sender: Option<OsString>,

    #[command(flatten)]
    pub dedup: DedupArgs,
}

/// Message-ID dedup options shared by `deliver` and `replay`.
#[derive(Debug, Args)]
pub struct DedupArgs {
    /// Store a message only once per user and folder: a copy whose Message-ID and body
    /// (SHA-256 of everything after the header block) match a stored one's is not stored
    /// again; one that only reuses a Message-ID is stored and logged dedup=id-reused. Keys
    /// in ROOT/.mailkeep/dedup.sqlite3. Default: off (every copy is stored).
    #[arg(long)]
    pub dedup: bool,

    /// How long a Message-ID folds later copies, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub dedup_window: u32,

    /// The store's file, by its absolute path, instead of ROOT/.mailkeep/dedup.sqlite3: on
    /// local disk when the root is on NFS, CephFS or SMB (shared by several relays), where a
    /// store is refused (exit 75). Its directory must exist, writable by the delivering
    /// user; the file is never followed if a symlink. It serves the root it first served
    /// (another root is refused, exit 75). Each relay then folds only its own copies. Empty:
    /// as if not given.
    #[arg(long, env = "MAILKEEP_DEDUP_STORE", value_name = "FILE", value_parser = any_path())]
    pub dedup_store: Option<PathBuf>,
}

/// A `--dedup-store` value taken as it is, empty too (an empty MAILKEEP_DEDUP_STORE is
/// no store): `dedup::Location::new` judges it, with the exit status of a delivery.
fn any_path() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayDirection {
    /// X-Gmail-Labels decides: Sent to .Sent, Chat to .Chats, everything else to the INBOX.
    Auto,
    In,
    Out,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Which folder each message goes to.
    #[arg(long, value_enum, default_value_t = ReplayDirection::Auto)]
    pub direction: ReplayDirection,

    /// The mbox dialect of the files.
    #[arg(long, value_enum, default_value_t = mbox::Format::Auto)]
    pub format: mbox::Format,

    /// The mail domain, for the Delivered-To address (user@DOMAIN). Required with
    /// `--direction in` or `auto`: there the From_ line names the outside sender, whose
    /// domain is not the user's. With `--direction out` the default is the domain of the
    /// From_ line's address (the user's own).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,

    /// How long to wait for another replay into the same folder to finish before giving up
    /// with exit 75 (two replays at once would each store what the other stores).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub lock_timeout: u64,

    /// Read and check everything, store nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Log a broken message with its byte offset and line, skip it and go on. Default: stop
    /// there with exit 65, everything before it stored.
    #[arg(long)]
    pub continue_on_error: bool,

    /// mbox files to read; `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DedupCommand {
    /// Print the number of keys per user and folder, and the oldest and newest.
    #[command(after_help = Family::Admin.footer())]
    Stats(DedupAdminArgs),
    /// Remove keys older than the window now (deliveries also prune as they go).
    #[command(after_help = Family::Admin.footer())]
    Prune(DedupAdminArgs),
}

#[derive(Debug, Args)]
pub struct DedupAdminArgs {
    /// The backup root holding .mailkeep/dedup.sqlite3.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// How long keys are kept, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub dedup_window: u32,

    /// The store's file when deliveries keep it outside the root (deliver --dedup-store).
    #[arg(long, env = "MAILKEEP_DEDUP_STORE", value_name = "FILE", value_parser = any_path())]
    pub dedup_store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The backup root to check.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// Check only this user. Default: every user below the root.
    #[arg(long, value_name = "NAME")]
    pub user: Option<OsString>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Fix what is safe to fix (subscriptions, missing directories, old tmp/ files) and say
    /// what was done. Only in what mailkeep makes: users' Maildirs, .Sent, .Chats and folders
    /// with a maildirfolder file; the rest is listed as not mailkeep's and left alone.
    #[arg(long)]
    pub repair: bool,

    /// Also verify the seals (`mailkeep seal`): the chain of digests, and that every sealed
    /// message is still there (new/ or cur/, any flags) with its size, unless an expire or
    /// erase entry in audit.log names it with its sealed size and SHA-256 (removals no seal
    /// vouches for yet are listed; with --seal-head, reported).
    #[arg(long)]
    pub seals: bool,

    /// With --seals: also compare every sealed message's SHA-256 (reads every file).
    #[arg(long, requires = "seals")]
    pub verify_content: bool,

    /// With --seals: every seal must carry a good signature by this Ed25519 public key
    /// (`openssl pkey -pubout` PEM, or its 64 hex digits).
    #[arg(long, value_name = "PUBKEY", requires = "seals")]
    pub verify_key: Option<PathBuf>,

    /// With --seals: a head digest kept off the machine; it must be a seal in the chain (a
    /// seal removed from the end of the chain is found only so).
    #[arg(long, value_name = "DIGEST", requires = "seals")]
    pub seal_head: Option<String>,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// The backup root to seal.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// Sign each new seal with this Ed25519 private key (PKCS#8, as `openssl genpkey
    /// -algorithm ed25519` writes it): NNNNNN.sig beside NNNNNN.seal. Default: unsigned.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,

    /// Print only the head line ("head NNNNNN.seal DIGEST").
    #[arg(long)]
    pub quiet: bool,

    /// Rebuild the index of sealed names (seals/index.sqlite) from the seal files first. It
    /// is rebuilt by itself when missing or out of step with the seals.
    #[arg(long)]
    pub rebuild_index: bool,

    /// Allow running as root (what it creates in ROOT/.mailkeep/seals is given to the
    /// root's owner). Default: refuse with exit 2; run as the backup's user.
    #[arg(long)]
    pub allow_root: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// The Monitoring Plugins conventions: `MAILKEEP OK - ... | perfdata`, details below.
    Nagios,
    /// The same facts as one JSON object, for scripts.
    Json,
    /// node_exporter's textfile-collector format.
    Prometheus,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The backup root to look at. Nothing is written to it.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// Exim lsearch file of the users who must receive copies; each one without a copy (INBOX
    /// or Sent) for --user-warn is named, and the verdict is at least WARNING.
    #[arg(long, value_name = "FILE")]
    pub accounts: Option<PathBuf>,

    /// WARNING when the newest copy into the INBOXes, or into the Sent folders, is older
    /// than this (AGE: 90s, 30m, 6h, 14d).
    #[arg(long, value_name = "AGE", default_value = "6h", value_parser = crate::time::parse_age)]
    pub warn: std::time::Duration,

    /// CRITICAL when the newest copy in either direction is older than this.
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = crate::time::parse_age)]
    pub crit: std::time::Duration,

    /// How long a user listed in --accounts may go without any copy.
    #[arg(long, value_name = "AGE", default_value = "14d", value_parser = crate::time::parse_age)]
    pub user_warn: std::time::Duration,

    /// How the verdict is written.
    #[arg(long, value_enum, default_value_t = StatusFormat::Nagios)]
    pub format: StatusFormat,

    /// Write into FILE (replaced atomically: temp file, fsync, rename in FILE's directory)
    /// instead of stdout; e.g. /var/lib/prometheus/node-exporter/mailkeep.prom.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Also give each user's newest copy per folder (Prometheus and JSON): one series per user.
    #[arg(long)]
    pub per_user: bool,

    /// Also count the messages in Exim's queue that wait for a mailkeep transport (a delivery
    /// to a transport named mailkeep_* was deferred); needs root or Exim's admin group.
    #[arg(long)]
    pub exim_queue: bool,

    /// With --exim-queue: WARNING when such a message has waited this long (0s: any).
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = crate::time::parse_age)]
    pub queue_warn: std::time::Duration,

    /// With --exim-queue: the Exim binary. Default: exim4, else exim, in /usr/sbin, /usr/bin.
    #[arg(long, value_name = "PATH")]
    pub exim: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImapServer {
    Dovecot,
}

#[derive(Debug, Args)]
pub struct ServeConfigArgs {
    /// Which server to configure.
    #[arg(value_enum)]
    pub server: ImapServer,

    /// The backup root to serve.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// Where to write the configuration (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub listen: String,

    /// IMAP port.
    #[arg(long, default_value_t = 143)]
    pub port: u16,
}

/// A folder `expire` can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RetentionFolder {
    /// The user's Maildir itself.
    #[value(name = "INBOX")]
    Inbox,
    /// `.Sent`.
    Sent,
    /// `.Chats` (replayed Google Chat).
    Chats,
}

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// The backup root.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// Remove messages whose date (INTERNALDATE: the file's mtime) is older than this (AGE: days,
    /// weeks or years, at least 1d: 90d, 26w, 7y; a year is 365 days).
    #[arg(long, value_name = "AGE", value_parser = crate::time::parse_retention)]
    pub older_than: std::time::Duration,

    /// Only this user. Default: every user below the root.
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub user: Option<OsString>,

    /// Only this folder. Default: INBOX, Sent and Chats.
    #[arg(long, value_enum, ignore_case = true)]
    pub folder: Option<RetentionFolder>,

    #[command(flatten)]
    pub removal: RemovalArgs,
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The backup root.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// The user whose messages go.
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub user: OsString,

    /// Only messages dated (INTERNALDATE) before DATE: YYYY-MM-DD (the start of that day,
    /// UTC) or YYYY-MM-DDTHH:MM:SSZ.
    #[arg(long, value_name = "DATE", value_parser = crate::time::parse_date)]
    pub before: Option<i64>,

    /// Only messages with this Message-ID (with or without the angle brackets).
    #[arg(long, value_name = "ID")]
    pub message_id: Option<String>,

    /// Why (a ticket, "GDPR request 2026-17"): written into the audit log.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,

    #[command(flatten)]
    pub removal: RemovalArgs,
}

/// What `expire` and `erase` share: how a removal runs.
#[derive(Debug, Args)]
pub struct RemovalArgs {
    /// List what would be removed (user, folder, name, size, date); change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Allow running as root (ROOT/.mailkeep's files it creates are given to the root's
    /// owner). Default: refuse with exit 2; run as the backup's user.
    #[arg(long)]
    pub allow_root: bool,

    /// The dedup store's file when deliveries keep it outside the root (deliver
    /// --dedup-store): the removed messages' keys are forgotten there.
    #[arg(long, env = "MAILKEEP_DEDUP_STORE", value_name = "FILE", value_parser = any_path())]
    pub dedup_store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The backup root.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// The user to hold (or release).
    #[arg(long, value_name = "NAME", allow_hyphen_values = true, required_unless_present = "list")]
    pub user: Option<OsString>,

    /// Why (a case number): written into holds.json and the audit log.
    #[arg(long, value_name = "TEXT", required_unless_present = "list")]
    pub reason: Option<String>,

    /// Release the user's hold instead of placing one.
    #[arg(long, conflicts_with = "list")]
    pub release: bool,

    /// Print the holds (user, since, by whom, reason); change nothing.
    #[arg(long, conflicts_with_all = ["user", "reason"])]
    pub list: bool,

    /// Allow running as root (ROOT/.mailkeep's files it creates are given to the root's
    /// owner). Default: refuse with exit 2; run as the backup's user.
    #[arg(long)]
    pub allow_root: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFolder {
    /// The INBOX (received mail).
    #[value(name = "INBOX", alias = "inbox")]
    Inbox,
    /// The .Sent folder.
    #[value(name = "Sent", alias = "sent")]
    Sent,
    /// The .Chats folder (Google Takeout's chats).
    #[value(name = "Chats", alias = "chats")]
    Chats,
    /// All three; in an mbox each message gets an `X-Mailkeep-Export: 1` line and an
    /// `X-Gmail-Labels: Inbox|Sent|Chat` line (replay drops both, keeps the folder).
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One mbox file, mboxrd quoting (`>From ` lines, reversibly), From_ lines carrying
    /// Return-Path and INTERNALDATE (UTC), as `mailkeep replay` and Python's mailbox read it.
    Mboxrd,
    /// A fresh Maildir with Maildir++ folders: same file names, same mtimes; hard links to
    /// the backup's files on the same file system, else fsynced copies.
    Maildir,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The backup root. Nothing is written there.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// Whose mail: a user name as `deliver` takes it (anything else exits 2).
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub user: OsString,

    /// Which folder. Messages go out folder by folder (INBOX, Sent, Chats), each in
    /// INTERNALDATE order (file mtime, then name).
    #[arg(long, value_enum, default_value_t = ExportFolder::All)]
    pub folder: ExportFolder,

    /// Only messages received on or after DATE (YYYY-MM-DD, UTC, or YYYY-MM-DDThh:mm:ssZ).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,

    /// Only messages received before DATE (YYYY-MM-DD, UTC, or YYYY-MM-DDThh:mm:ssZ).
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,

    /// What to write.
    #[arg(long, value_enum, default_value_t = ExportFormat::Mboxrd)]
    pub format: ExportFormat,

    /// The mbox file (written as a temp file beside it, then renamed), `-` for stdout, or
    /// the Maildir directory (must be missing or empty). Never inside the backup root.
    #[arg(long, value_name = "FILE|DIR|-")]
    pub out: PathBuf,

    /// Replace an existing mbox file; add to an existing Maildir (names it has are skipped,
    /// so an interrupted Maildir export resumes).
    #[arg(long)]
    pub force: bool,

    /// With --format maildir: hard-link each message to the backup's file instead of
    /// copying it (same file system; copied otherwise). Only for a copy the admin keeps: a
    /// link IS the backup's file, so whoever can write or chown it changes the backup.
    /// Never for a hand-over. Default: fsynced copies, mtimes kept.
    #[arg(long)]
    pub link: bool,
}

/// Parses the command line `args`; on failure (or a request for help) says so and gives
/// the outcome: one line on stderr for a usage error, whatever clap names; help and version
/// on stdout and `Exit::Ok`, except in `deliver`.
///
/// In `deliver` no help or version flag ever exits 0: a delivery may exit 0 only once the
/// message is stored, and a help request would leave it unstored. `mailkeep deliver --help`
/// on its own says, in one line, to run `mailkeep help deliver`, and exits with usage (64);
/// a help or version flag among a delivery's arguments is the usage error clap names.
/// `mailkeep help deliver` is not a delivery and prints the help with status 0.
pub fn parse(args: Vec<OsString>) -> Result<Cli, Exit> {
    let in_deliver = args.get(1).is_some_and(|a| a == "deliver");
    let status = args.get(1).is_some_and(|a| a == "status");
    if in_deliver && args.len() == 3 && matches!(args[2].to_str(), Some("-h" | "--help")) {
        crate::log::stderr_line(
            "usage: deliver has no --help (it exits 0 only once a message is stored): run 'mailkeep help deliver'",
        );
        return Err(Exit::Usage);
    }
    parse_from(args).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            let _ = e.print();
            Exit::Ok
        }
        // `mailkeep` or `mailkeep dedup` alone: the help is the message.
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Exit::Usage
        }
        _ => {
            let line = one_line(&e);
            crate::log::stderr_line(&line);
            // A monitoring system shows a plugin's first line of stdout: say it there too,
            // in the plugin's form (its status, 3, comes from the exit family).
            if status {
                println!("MAILKEEP UNKNOWN - usage: {}", crate::log::escape(&line));
            }
            Exit::Usage
        }
    })
}

/// A clap error on one line, without the usage block: "the following required arguments
/// were not provided: --root <DIR>, --direction <DIRECTION>".
pub fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut out = String::new();
    for line in text.lines().take_while(|l| !l.starts_with("Usage:")) {
        let line = line.trim();
        let line = line.strip_prefix("error: ").unwrap_or(line);
        if line.is_empty() || line.starts_with("For more information") {
            continue;
        }
        let sep = match () {
            () if out.is_empty() => "",
            () if out.ends_with(':') || line.starts_with('[') => " ",
            // The rest of a list after "...: --root <DIR>".
            () if line.starts_with('-') || line.starts_with('<') => ", ",
            () => "; ",
        };
        out.push_str(sep);
        out.push_str(line);
    }
    if out.is_empty() { "bad usage".into() } else { out }
}

/// Parses the command line `args`. `deliver` runs once per message (Exim starts a process
/// for every copy), so its command line goes to a command that holds only the `deliver`
/// subcommand: the full one makes clap build every subcommand's arguments and help text
/// first, about a tenth of a delivery's start-up.
///
/// The `deliver` command has no help or version flag: printing help exits 0, and a delivery
/// must exit 0 only once the message is stored. An envelope address like `-hr@example.org`
/// passed without `--`, or a stray `-h`, is then a usage error, never a help request.
pub fn parse_from(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    if args.get(1).is_some_and(|a| a == "deliver") {
        let deliver = DeliverArgs::augment_args(clap::Command::new("deliver")).disable_help_flag(true);
        let mut cmd = clap::Command::new("mailkeep")
            .subcommand(deliver)
            .disable_help_flag(true)
            .disable_version_flag(true)
            .disable_help_subcommand(true);
        let mut matches = cmd.try_get_matches_from_mut(args)?;
        // The `_mut` form takes the values out instead of cloning every match first.
        return Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd));
    }
    Cli::try_parse_from(args)
}

/// A command line that parses but cannot be acted on.
#[derive(Debug, thiserror::Error)]
#[error("usage: {0}")]
pub struct UsageError(pub String);

impl Classify for UsageError {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The full parser, as the reference for the `deliver`-only one.
    fn parse_full(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }

    #[test]
    fn deliver_only_parser_gives_what_the_full_parser_gives() {
        let cases: &[&[&str]] = &[
            &["mailkeep", "deliver", "--root", "/r", "--user", "a", "--direction", "in", "--rcpt", "a@x"],
            &["mailkeep", "deliver", "--root", "/r", "--user", "a", "--direction", "out", "--rcpt", "x@a", "y@b"],
            &["mailkeep", "deliver", "--root=/r", "--user", "a", "--direction", "in", "--dedup", "--log", "none"],
            &["mailkeep", "deliver", "--root", "/r", "--user", "a", "--direction", "in", "--allow-root"],
            &["mailkeep", "deliver", "--root", "/r", "--user", "a", "--direction", "sideways"],
            &["mailkeep", "deliver", "--root", "/r", "--user", "a", "--direction", "in", "--no-such-option"],
            &["mailkeep", "deliver", "--root", "/r", "--user", "a", "--direction", "in", "stray"],
            &["mailkeep", "deliver", "--user", "a"],
            &["mailkeep", "deliver"],
            &["mailkeep", "deliver", "--log", "nowhere", "--root", "/r", "--user", "a", "--direction", "in"],
            &["mailkeep", "deliver", "--root", "/r", "--user", "-a", "--direction", "out", "--", "-x@a", "--y=1@b"],
            &["mailkeep", "deliver", "--root", "/r", "--user", "a", "--direction", "out", "--rcpt", "x@a", "--", "y@b"],
        ];
        for case in cases {
            let fast = parse_from(case.iter().map(OsString::from).collect());
            let full = parse_full(case);
            match (&fast, &full) {
                (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{case:?}"),
                // What `parse` prints: the whole error on one line, without the usage block
                // (and without the full parser's pointer to --help).
                (Err(a), Err(b)) => {
                    assert_eq!(a.kind(), b.kind(), "{case:?}");
                    assert_eq!(one_line(a), one_line(b), "{case:?}");
                }
                _ => panic!("{case:?}: expected {full:?}, got {fast:?}"),
            }
        }
    }

    /// Help exits 0; a delivery may exit 0 only once the message is stored (issue 19: `-h`
    /// after `--rcpt x` printed help and exited 0, the message unstored).
    #[test]
    fn an_address_like_a_short_option_is_never_a_help_request_in_deliver() {
        let base = ["mailkeep", "deliver", "--root", "/r", "--user", "a", "--direction", "out"];
        let tails: [&[&str]; 7] = [
            &["--rcpt", "bob@x", "-hr@partner.example"],
            &["--rcpt", "-Vip@x"],
            &["-h@x"],
            &["--rcpt", "x", "-h"],
            &["--rcpt", "x", "--help"],
            &["-V", "--rcpt", "x"],
            &["--version"],
        ];
        for tail in tails {
            let args: Vec<OsString> = base.iter().chain(tail).map(OsString::from).collect();
            let err = parse_from(args).expect_err("must not parse");
            assert!(err.use_stderr(), "{tail:?} was taken as a request for help or version: {err}");
        }
        let args: Vec<OsString> = base.iter().chain(&["--", "-hr@partner.example", "-h"]).map(OsString::from).collect();
        let Command::Deliver(d) = parse_from(args).unwrap().command else { panic!("not deliver") };
        assert_eq!(d.recipients, ["-hr@partner.example", "-h"]);
        // A user name may start with `-` too (User::parse allows it).
        let args = ["mailkeep", "deliver", "--root", "/r", "--user", "-bob", "--direction", "in"];
        let Command::Deliver(d) = parse_from(args.iter().map(OsString::from).collect()).unwrap().command else {
            panic!("not deliver")
        };
        assert_eq!(d.store.user, "-bob");
    }

    #[test]
    fn a_help_flag_in_deliver_is_a_usage_error_even_alone() {
        for flag in ["-h", "--help", "-V", "--version"] {
            let args = ["mailkeep", "deliver", flag].map(OsString::from).to_vec();
            assert_eq!(parse(args).err(), Some(Exit::Usage), "{flag}");
        }
        let args = ["mailkeep", "help", "deliver"].map(OsString::from).to_vec();
        assert_eq!(parse(args).err(), Some(Exit::Ok), "help deliver is no delivery");
    }

    #[test]
    fn a_usage_error_is_one_line_naming_what_is_missing() {
        let err = parse_from(["mailkeep", "deliver", "--user", "a"].map(OsString::from).to_vec()).unwrap_err();
        assert_eq!(
            one_line(&err),
            "the following required arguments were not provided: --root <DIR>, --direction <DIRECTION>"
        );
        let err = Cli::try_parse_from(["mailkeep", "check", "--root", "/r", "--bogus"]).unwrap_err();
        assert_eq!(one_line(&err), "unexpected argument '--bogus' found");
    }

    /// Every command has a family (`exit.rs`): a new one must be placed in one.
    #[test]
    fn every_subcommand_has_an_exit_status_family() {
        for sub in Cli::command().get_subcommands() {
            let name = sub.get_name();
            let listed = Family::ALL.iter().filter(|f| f.commands().contains(&name)).count();
            assert_eq!(listed, 1, "{name} is in {listed} families");
        }
    }

    #[test]
    fn rcpt_takes_several_values_as_pipe_addresses_gives_them() {
        let cli = Cli::try_parse_from([
            "mailkeep",
            "deliver",
            "--root",
            "/r",
            "--user",
            "a",
            "--direction",
            "out",
            "--rcpt",
            "x@a",
            "y@b",
            "z@c",
            "--log",
            "none",
        ])
        .unwrap();
        let Command::Deliver(d) = cli.command else { panic!("not deliver") };
        assert_eq!(d.rcpt.len(), 3);
    }
}

#[derive(Debug, Args)]
pub struct LmtpArgs {
    /// The backup root; user NAME's Maildir is ROOT/NAME/. Checked for every message: while
    /// its marker is missing (an unmounted volume) every recipient gets 451 and the client
    /// retries.
    #[arg(long, env = "MAILKEEP_ROOT", value_name = "DIR")]
    pub root: PathBuf,

    /// Exim lsearch file of accepted users, read for every message; an unlisted recipient
    /// gets 550 after DATA (deliver's 67). Default: any safe name is accepted.
    #[arg(long, value_name = "FILE")]
    pub accounts: Option<PathBuf>,

    /// Make directories 2770 and files 0660 so a group (e.g. the IMAP server's) shares them.
    #[arg(long)]
    pub shared_group: bool,

    /// Where the one line per stored copy goes.
    #[arg(long, value_enum, default_value_t = LogTarget::Syslog)]
    pub log: LogTarget,

    /// Allow running as root. Default: refuse with exit 2.
    #[arg(long)]
    pub allow_root: bool,

    /// Listen on this Unix socket for INBOX copies (the socket file is made, mode 0660; a
    /// stale one is replaced, one a running server answers on is refused with exit 2).
    /// Default: the sockets systemd passes (LISTEN_FDS), each named by FileDescriptorName=
    /// `inbox` (INBOX copies) or `sent` (Sent copies); any other name is refused (exit 2).
    #[arg(long, value_name = "PATH")]
    pub listen: Option<PathBuf>,

    /// Listen on this Unix socket for Sent copies: the owner is MAIL FROM's local part, the
    /// recipients become Envelope-To, one copy for all of them.
    #[arg(long, value_name = "PATH")]
    pub listen_sent: Option<PathBuf>,

    /// The largest message accepted, in bytes as stored (LF line ends, dots unstuffed;
    /// advertised as SIZE; larger gets 552, a bounce: the copy is lost). Must exceed the
    /// MTA's own limit plus the headers it adds (Exim's message_size_limit is 50 MB by
    /// default). A connection keeps 1 MiB of the message in memory and the rest in an unnamed
    /// file in ROOT/.mailkeep while it stores the copies.
    #[arg(long, value_name = "BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_size: u64,

    /// Connections served at once; more wait in the listen queue until a slot is free.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_connections: usize,

    /// A client silent this long is told 421 and closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub idle_timeout: u64,

    /// A message whose DATA (354 to the final dot) takes longer is dropped: the client is
    /// told 421 and closed, nothing is stored, it retries. A client trickling bytes never
    /// idles; this bounds how long it holds a connection slot.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub data_timeout: u64,

    #[command(flatten)]
    pub dedup: DedupArgs,
}
