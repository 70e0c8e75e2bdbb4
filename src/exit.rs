//! The exit-status contract: which failure ends with which status, in one table that the
//! `--help` footer, the man pages' EXIT STATUS and the README's tables are made from.
//!
//! An error says what kind of failure it is (an `Exit` class, each error type's own
//! exhaustive `match`); the command's `Family` says which number that class is.
//! - `deliver` and `replay` speak sysexits(3), as the MTAs' pipe transports need: Exim
//!   treats 75 and 73 (`temp_errors`) as "try again later", Postfix's pipe(8) only 75 (it
//!   bounces 73), and both treat every other non-zero status as a permanent failure. So
//!   anything not certainly permanent must end as 75, whichever MTA runs us: a symlink
//!   planted below the root (`CantCreate`) too, since the copy succeeds once it is removed
//!   (issue 23).
//! - The admin commands speak what restic and borg users script against: 0 ok, 1 problems
//!   found, 2 usage or configuration (run again only after fixing something), and 75
//!   where running again may help. 75 rather than borg's or restic's 3: it is the one "try
//!   again" status every mailkeep command uses, sysexits and systemd know it, and 3 means
//!   UNKNOWN to the monitoring plugins a status check would speak to.
//! - `status` speaks the Monitoring Plugins conventions that Icinga, Nagios, Checkmk, Zabbix
//!   and Sensu run: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; anything it cannot judge (bad
//!   usage, an error, a bug) is UNKNOWN.

/// What kind of outcome a command had; `code` turns it into a number for its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// Findings were reported (`check`), or a result refused (`accounts sync`); WARNING
    /// (`status`).
    Problems,
    /// Something needs action now: CRITICAL (`status`). No other command reports it.
    Critical,
    Usage,
    DataErr,
    /// An input file named on the command line is missing or unreadable (`replay`).
    NoInput,
    NoUser,
    /// Something the admin must fix, while the message waits for it: a delivery defers (75,
    /// which Exim and Postfix both retry; never a bounce), an admin command says 2. A
    /// symlink where a directory belongs; a dedup store that is refused (a symlink, on a
    /// network filesystem, another root's, a bad path).
    CantCreate,
    TempFail,
    Config,
}

/// Which convention a command's exit status follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// sysexits(3), for Exim: `deliver`, `replay`.
    Delivery,
    /// restic/borg style: every other command.
    Admin,
    /// Monitoring Plugins: `status`.
    Status,
}

impl Exit {
    pub const ALL: [Exit; 10] = [
        Exit::Ok,
        Exit::Problems,
        Exit::Critical,
        Exit::Usage,
        Exit::DataErr,
        Exit::NoInput,
        Exit::NoUser,
        Exit::CantCreate,
        Exit::TempFail,
        Exit::Config,
    ];

    /// The process's exit status for this outcome of a command of `family`.
    pub fn code(self, family: Family) -> u8 {
        match family {
            Family::Delivery => match self {
                Exit::Ok => 0,
                // Neither deliver nor replay reports findings; 1 is no sysexits code.
                Exit::Problems | Exit::Critical => 1,
                Exit::Usage => 64,
                Exit::DataErr => 65,
                Exit::NoInput => 66,
                Exit::NoUser => 67,
                // Postfix bounces 73: a path the admin must fix is retried like any other.
                Exit::CantCreate | Exit::TempFail => 75,
                Exit::Config => 78,
            },
            Family::Admin => match self {
                Exit::Ok => 0,
                // No admin command reports CRITICAL; were one to, it is a problem found.
                Exit::Problems | Exit::Critical => 1,
                // Whatever the admin must change before a second run can do better.
                Exit::Usage | Exit::DataErr | Exit::NoInput | Exit::NoUser | Exit::CantCreate | Exit::Config => 2,
                Exit::TempFail => 75,
            },
            Family::Status => match self {
                Exit::Ok => 0,
                Exit::Problems => 1,
                Exit::Critical => 2,
                // What status cannot judge, a monitoring system must not read as OK or as
                // a verdict on the backup: UNKNOWN, and a panic too (`start.rs`).
                Exit::Usage
                | Exit::DataErr
                | Exit::NoInput
                | Exit::NoUser
                | Exit::CantCreate
                | Exit::TempFail
                | Exit::Config => 3,
            },
        }
    }

    /// True when the MTA keeps the message queued and retries on this status.
    pub fn defers(self) -> bool {
        matches!(self, Exit::TempFail | Exit::CantCreate)
    }
}

/// Errors that know which kind of failure they are: each error type's own exhaustive
/// `match`, and `commands::Error`'s over all of them.
pub trait Classify {
    fn exit(&self) -> Exit;
}

/// One documented exit status.
#[derive(Debug)]
pub struct Row {
    pub code: u8,
    /// For the one-line `--help` footer.
    pub short: &'static str,
    /// For the man page and the README.
    pub meaning: &'static str,
}

const fn row(code: u8, short: &'static str, meaning: &'static str) -> Row {
    Row { code, short, meaning }
}

const DELIVERY: &[Row] = &[
    row(
        0,
        "stored",
        "stored and durable (deliver, after the last fsync); every message stored or already there (replay)",
    ),
    row(64, "usage", "bad usage: an unknown option, a missing argument, a help or version flag in deliver"),
    row(65, "data", "bad data: an empty message, a file that is not an mbox, a broken message"),
    row(66, "no input", "a file named to replay is missing, unreadable or a directory (nothing is stored)"),
    row(67, "unknown user", "unsafe user name, or one not listed in --accounts"),
    row(
        75,
        "temporary (the MTA retries)",
        "anything temporary or unknown: the root missing or without its marker (not initialised or not mounted), \
         a path below the root that is a symlink or not a directory (until the admin removes it), \
         a dedup store the admin must fix (a symlink, on a network filesystem, another backup root's, \
         a --dedup-store that is no absolute path to a file), \
         I/O error, full disk, quota, file too large, dedup store or replay lock busy, a bug",
    ),
    row(78, "configuration", "configuration: run as root without --allow-root"),
];

const ADMIN: &[Row] = &[
    row(
        0,
        "ok",
        "done: the root is initialised or was already (init), the backup is clean or repaired (check), the file is \
         written or unchanged (accounts sync), every matching message is removed and recorded (expire, erase; \
         expire skips users on legal hold), the hold is placed or released (hold), every selected message is \
         exported (export)",
    ),
    row(
        1,
        "problems found",
        "problems found: check found some it did not repair; accounts sync refused to shrink the file; \
         erase refused a user on legal hold; expire or erase could not remove some messages; export \
         skipped a file that is no regular message (a FIFO, a symlink; each is named); \
         seal found a file it could not seal, audit.log or a seal rewritten or damaged, an unsigned head or an edited index",
    ),
    row(
        2,
        "usage or configuration",
        "usage or configuration, to fix before running again: a bad option or argument, a missing root or dedup store, \
         init of a non-empty directory without --adopt or of an unmounted fstab mount point, \
         init run as root without --allow-root, \
         a symlink where mailkeep keeps a directory, a key file others can read, \
         expire, erase, hold or seal run as root without --allow-root, erase of a user without a Maildir, \
         an audit log or holds file that does not parse, a dedup store on a network filesystem \
         or of another backup root, a --dedup-store that is no absolute path to a file, \
         an export's --out that exists (without --force), lies inside the root or has a symlink \
         below it, a user without a backup, a seal key that is none",
    ),
    row(
        75,
        "temporary",
        "anything temporary or unknown, where running again may help: a root without its marker \
         (not initialised or not mounted), I/O error, full disk, the directory API failing, a bug",
    ),
];

const STATUS: &[Row] = &[
    row(0, "OK", "OK: copies arrive in both directions, the root is initialised and has room"),
    row(
        1,
        "WARNING",
        "WARNING: the newest copy in a direction is older than --warn, less than 10% space or inodes free, \
         a user in --accounts without a copy for --user-warn, a copy waiting in Exim's queue for --queue-warn",
    ),
    row(
        2,
        "CRITICAL",
        "CRITICAL: the root is missing, not initialised (not mounted?), not writable or read-only, or the newest copy in a \
         direction is older than --crit",
    ),
    row(
        3,
        "UNKNOWN",
        "UNKNOWN: status cannot tell: bad usage, the root or the accounts file unreadable, Exim's queue unreadable, a bug",
    ),
];

impl Family {
    pub const ALL: [Family; 3] = [Family::Delivery, Family::Admin, Family::Status];

    /// The family of the subcommand named `name` (the process's first argument).
    pub fn of(name: Option<&std::ffi::OsStr>) -> Family {
        match name.and_then(|n| n.to_str()) {
            Some(n) if Family::Delivery.commands().contains(&n) => Family::Delivery,
            Some(n) if Family::Status.commands().contains(&n) => Family::Status,
            _ => Family::Admin,
        }
    }

    /// The subcommands of this family.
    pub fn commands(self) -> &'static [&'static str] {
        match self {
            Family::Delivery => &["deliver", "replay"],
            Family::Admin => &[
                "init",
                "check",
                "dedup",
                "serve-config",
                "accounts",
                "generate",
                "expire",
                "erase",
                "hold",
                "export",
                "seal",
                "lmtp",
            ],
            Family::Status => &["status"],
        }
    }

    /// Its commands as a reader names them.
    pub fn title(self) -> &'static str {
        match self {
            Family::Delivery => "deliver and replay (sysexits, for Exim and Postfix)",
            Family::Admin => {
                "init, check, dedup stats and prune, serve-config, accounts sync, generate, expire, erase, hold, export, seal, lmtp"
            }
            Family::Status => "status (Monitoring Plugins)",
        }
    }

    /// The documented statuses, in order.
    pub fn rows(self) -> &'static [Row] {
        match self {
            Family::Delivery => DELIVERY,
            Family::Admin => ADMIN,
            Family::Status => STATUS,
        }
    }

    /// The `--help` footer of a subcommand of this family.
    pub fn footer(self) -> String {
        format!("Exit status: {}.", self.statuses())
    }

    /// The `--help` footer of `mailkeep` itself: every family.
    pub fn footer_of_all() -> String {
        let (delivery, admin) = (Family::Delivery.statuses(), Family::Admin.statuses());
        let status = Family::Status.statuses();
        format!("Exit status of deliver and replay: {delivery}.\nOf status: {status}.\nOf the other commands: {admin}.")
    }

    /// The statuses on one line: "0 stored, 64 usage, ..., 75 temporary (the MTA retries), ...".
    fn statuses(self) -> String {
        let mut parts: Vec<(String, &str)> = Vec::new();
        for r in self.rows() {
            match parts.last_mut() {
                Some((codes, short)) if *short == r.short => codes.push_str(&format!("/{}", r.code)),
                _ => parts.push((r.code.to_string(), r.short)),
            }
        }
        let parts: Vec<String> = parts.iter().map(|(codes, short)| format!("{codes} {short}")).collect();
        parts.join(", ")
    }

    /// The README's table for this family.
    pub fn markdown(self) -> String {
        let mut out = String::new();
        match self {
            Family::Delivery => out.push_str("| status | meaning | what Exim and Postfix do |\n|---|---|---|\n"),
            Family::Admin | Family::Status => out.push_str("| status | meaning |\n|---|---|\n"),
        }
        for r in self.rows() {
            out.push_str(&format!("| {} | {} |", r.code, r.meaning));
            if self == Family::Delivery {
                out.push_str(&format!(" {} |", mta_does(r.code)));
            }
            out.push('\n');
        }
        out
    }

    /// The man page's EXIT STATUS paragraphs (roff) for this family.
    pub fn roff(self) -> String {
        let mut out = String::new();
        for r in self.rows() {
            let mta =
                if self == Family::Delivery { format!(". Exim, Postfix: {}", mta_does(r.code)) } else { String::new() };
            out.push_str(&format!(".TP\n\\fB{}\\fR\n{}{}\n", r.code, roff_escape(r.meaning), roff_escape(&mta)));
        }
        out
    }
}

/// What Exim's pipe transport (`temp_errors = 75:73`) and Postfix's pipe(8) (75 only) do
/// with a delivery's status: for every status deliver uses, the same.
fn mta_does(code: u8) -> &'static str {
    match code {
        0 => "delivered",
        75 => "defers, retries",
        _ => "bounces (Exim: to errors_to; Postfix: to bounce_notice_recipient)",
    }
}

/// `text` as roff text: backslashes and hyphens escaped.
pub fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysexits_values_are_the_ones_exim_expects() {
        let code = |e: Exit| e.code(Family::Delivery);
        assert_eq!(code(Exit::Ok), 0);
        assert_eq!(code(Exit::Usage), 64);
        assert_eq!(code(Exit::DataErr), 65);
        assert_eq!(code(Exit::NoInput), 66);
        assert_eq!(code(Exit::NoUser), 67);
        assert_eq!(code(Exit::CantCreate), 75, "Postfix bounces 73 (issue 23)");
        assert_eq!(code(Exit::TempFail), 75);
        assert_eq!(code(Exit::Config), 78);
    }

    /// A failed start-up uses 75 before the command is known; the panic hook uses the
    /// command's "try again", which for status is UNKNOWN.
    #[test]
    fn temporary_is_75_in_every_family_but_status_where_it_is_unknown() {
        assert_eq!(Exit::TempFail.code(Family::Delivery), 75);
        assert_eq!(Exit::TempFail.code(Family::Admin), 75);
        assert_eq!(Exit::TempFail.code(Family::Status), 3);
    }

    #[test]
    fn status_speaks_the_monitoring_plugins_codes() {
        let code = |e: Exit| e.code(Family::Status);
        assert_eq!([code(Exit::Ok), code(Exit::Problems), code(Exit::Critical)], [0, 1, 2]);
        for e in Exit::ALL {
            assert!(code(e) <= 3, "{e:?}");
        }
        assert_eq!(code(Exit::Usage), 3, "bad usage is UNKNOWN for a plugin");
    }

    #[test]
    fn admin_commands_use_0_1_2_and_75() {
        for e in Exit::ALL {
            assert!([0, 1, 2, 75].contains(&e.code(Family::Admin)), "{e:?}");
        }
    }

    #[test]
    fn only_75_defers_so_postfix_retries_it_too_issue_23() {
        for e in [Exit::Ok, Exit::Usage, Exit::DataErr, Exit::NoInput, Exit::NoUser, Exit::Config] {
            assert!(!e.defers(), "{e:?}");
        }
        assert!(Exit::TempFail.defers() && Exit::CantCreate.defers());
        assert_eq!(mta_does(Exit::CantCreate.code(Family::Delivery)), "defers, retries");
        for e in Exit::ALL {
            assert_ne!(e.code(Family::Delivery), 73, "{e:?}: Postfix bounces 73");
        }
    }

    /// Every status a command of the family can end with is documented, and nothing else.
    #[test]
    fn the_table_documents_exactly_the_codes_used() {
        for family in Family::ALL {
            // Neither deliver nor replay reports findings; only status reports CRITICAL.
            let findings = |e: Exit| matches!(e, Exit::Problems | Exit::Critical);
            let used = Exit::ALL.iter().filter(|e| match family {
                Family::Delivery => !findings(**e),
                Family::Admin => **e != Exit::Critical,
                Family::Status => true,
            });
            let mut codes: Vec<u8> = used.map(|e| e.code(family)).collect();
            codes.sort();
            codes.dedup();
            let documented: Vec<u8> = family.rows().iter().map(|r| r.code).collect();
            assert_eq!(codes, documented, "{family:?}");
        }
    }

    #[test]
    fn help_footer_names_every_code_of_the_family() {
        assert_eq!(
            Family::Delivery.footer(),
            "Exit status: 0 stored, 64 usage, 65 data, 66 no input, 67 unknown user, 75 temporary (the MTA retries), \
             78 configuration."
        );
        assert_eq!(
            Family::Admin.footer(),
            "Exit status: 0 ok, 1 problems found, 2 usage or configuration, 75 temporary."
        );
    }

    #[test]
    fn the_first_argument_decides_the_family() {
        let of = |s: &str| Family::of(Some(std::ffi::OsStr::new(s)));
        assert_eq!(of("deliver"), Family::Delivery);
        assert_eq!(of("replay"), Family::Delivery);
        assert_eq!(of("check"), Family::Admin);
        assert_eq!(of("status"), Family::Status);
        assert_eq!(of("--help"), Family::Admin);
        assert_eq!(Family::of(None), Family::Admin);
    }
}
