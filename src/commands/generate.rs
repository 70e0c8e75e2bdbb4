//! Man pages and shell completions generated from the clap definition, so they can never
//! drift from `--help`; the sections clap does not know (EXIT STATUS, FILES, EXAMPLES,
//! SEE ALSO) are written here once, EXIT STATUS from `exit.rs`'s table.
//!
//! A page is named as man-db finds it for the command people type: `man mailkeep deliver`
//! opens mailkeep-deliver(1), whose NAME and SYNOPSIS say `mailkeep deliver`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs, Generated};
use crate::exit::{Classify, Exit, Family};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {err}", path.display())]
pub struct GenerateError {
    path: PathBuf,
    err: io::Error,
}

impl Classify for GenerateError {
    /// A directory that cannot be made or written is the admin's to fix; the rest may pass.
    fn exit(&self) -> Exit {
        use io::ErrorKind::*;
        match self.err.kind() {
            NotFound | NotADirectory | IsADirectory | AlreadyExists | PermissionDenied | ReadOnlyFilesystem => {
                Exit::Config
            }
            _ => Exit::TempFail,
        }
    }
}

const FILES: &str = r"
.TP
\fIROOT\fR/\fIuser\fR/{cur,new,tmp}
the user's INBOX (Maildir)
.TP
\fIROOT\fR/\fIuser\fR/.Sent/
the Maildir++ folder of sent mail; .Chats/ for replayed chats
.TP
\fIROOT\fR/\fIuser\fR/subscriptions, courierimapsubscribed
the folders Dovecot and Courier show as subscribed
.TP
\fIROOT\fR/.mailkeep/dedup.sqlite3
the Message\-ID store of \-\-dedup
.TP
/usr/share/doc/mailkeep/examples/
Exim router and transport snippets
";

/// The snippets' inbound transport, the one the package ships, read at build time: the man
/// page shows the very text an admin installs. The recipients go after `--`: a local part
/// may start with `-` and must never be an option.
const TRANSPORTS: &str = include_str!("../../exim-snippets/debian/conf.d/transport/30_mailkeep_pipes");
/// The Postfix services that run deliver (issue 23): shown beside Exim's transport.
const POSTFIX_SERVICES: &str = include_str!("../../postfix-snippets/master.cf.fragment");

/// The `mailkeep-in` pipe(8) service of the Postfix snippet: its line and the indented
/// lines that continue it.
fn postfix_inbox_service() -> String {
    let start = POSTFIX_SERVICES.find("\nmailkeep-in ").map_or(0, |i| i + 1);
    let mut lines = POSTFIX_SERVICES[start..].lines();
    let first = lines.next().unwrap_or_default();
    let rest = lines.take_while(|l| l.starts_with(char::is_whitespace));
    std::iter::once(first).chain(rest).collect::<Vec<_>>().join("\n")
}

/// The macros of the snippets, as the package's defaults fill them in.
const MACROS: [(&str, &str); 5] = [
    (" MAILKEEP_OPTIONS", ""),
    ("MAILKEEP_BIN", "/usr/bin/mailkeep"),
    ("MAILKEEP_ROOT", "/var/lib/mailkeep"),
    ("MAILKEEP_ACCOUNTS", "/etc/exim4/mailkeep/accounts"),
    ("MAILKEEP_USER", "mailbackup"),
];

/// `text` as roff shows it literally in a `.nf` block.
fn roff_literal(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// The EXAMPLES of the page of `command` (`None` for mailkeep(1)), if it has any.
fn examples(command: Option<&str>) -> Option<String> {
    let takeout =
        "mailkeep replay \\-\\-root /var/lib/mailkeep \\-\\-user alice \\-\\-domain example.com All\\e mail.mbox";
    let replay = format!("Load a Google Takeout export:\n.PP\n.nf\n{takeout}\n.fi\n");
    match command {
        None | Some("deliver") => {
            let start = TRANSPORTS.find("\nmailkeep_inbox:").map_or(0, |i| i + 1);
            let block = TRANSPORTS[start..].split("\n\n").next().unwrap_or_default();
            let filled =
                MACROS.iter().fold(block.to_string(), |text, (macro_name, value)| text.replace(macro_name, value));
            let transport = format!(
                "The Exim pipe transport for the inbound copy (the whole set is in /usr/share/doc/mailkeep/examples/):\n\
                 .PP\n.nf\n{}\n.fi\n.PP\n\
                 The Postfix pipe(8) service for the same (master.cf; the rest is in \
                 /usr/share/doc/mailkeep/examples/postfix/):\n.PP\n.nf\n{}\n.fi\n",
                roff_literal(&filled),
                roff_literal(&postfix_inbox_service())
            );
            Some(if command.is_none() { format!("{transport}.PP\n{replay}") } else { transport })
        }
        Some("replay") => Some(replay),
        Some(_) => None,
    }
}

const SEE_ALSO: &str =
    "\\fBexim4\\fR(8), \\fBpipe\\fR(8), \\fBmaildir\\fR(5), \\fBdovecot\\fR(1), \\fBmailkeep\\fR(1)\n";

pub fn generate(args: &GenerateArgs) -> Result<Exit, crate::commands::Error> {
    let dir = &args.dir;
    let failed = |err| GenerateError { path: dir.clone(), err };
    fs::create_dir_all(dir).map_err(failed)?;
    match args.what {
        Generated::Man => man_pages(dir, &["mailkeep"], Cli::command())?,
        Generated::Completions => {
            for shell in [Shell::Bash, Shell::Zsh] {
                clap_complete::generate_to(shell, &mut Cli::command(), "mailkeep", dir).map_err(failed)?;
            }
        }
    }
    Ok(Exit::Ok)
}

/// The page of the command `words` (`mailkeep dedup`), mailkeep-dedup.1, and one for each
/// of its visible subcommands.
fn man_pages(dir: &Path, words: &[&str], cmd: clap::Command) -> Result<(), GenerateError> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(dir, &[words, &[sub.get_name()]].concat(), sub.clone())?;
    }
    let path = dir.join(format!("{}.1", words.join("-")));
    fs::write(&path, page(words, cmd)).map_err(|err| GenerateError { path, err })
}

/// The roff text of the page of the command `words`.
fn page(words: &[&str], cmd: clap::Command) -> Vec<u8> {
    let (title, shown) = (words.join("-"), words.join(" "));
    // NAME gives the page's name first: whatis (lexgrog) takes no name with a space.
    let name = if words.len() > 1 { format!("{title}, {shown}") } else { title.clone() };
    let subs: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    // The footer is this page's EXIT STATUS; the help subcommand has no page.
    let cmd = cmd.display_name(&name).bin_name(&shown).after_help(None).disable_help_subcommand(true);
    let man = clap_mangen::Man::new(cmd)
        .title(&title)
        .section("1")
        .source(format!("mailkeep {}", env!("CARGO_PKG_VERSION")))
        .manual("mailkeep");
    let mut out = Vec::new();
    man.render(&mut out).expect("rendering into memory does not fail");
    // clap_mangen names a subcommand's page "<NAME>-<sub>", from our NAME line; the page is
    // "<title>-<sub>".
    let mut text = String::from_utf8(out).expect("clap_mangen writes UTF-8");
    for sub in subs {
        let wrong = format!("{}\\-{}(1)", name.replace('-', "\\-"), sub.replace('-', "\\-"));
        text = text.replace(&wrong, &format!("{}\\-{}(1)", title.replace('-', "\\-"), sub.replace('-', "\\-")));
    }
    text.push_str(&format!(".SH \"EXIT STATUS\"\n{}", exit_status(words.get(1).copied())));
    text.push_str(&format!(".SH \"FILES\"{FILES}"));
    if let Some(body) = examples(words.get(1).copied()) {
        text.push_str(&format!(".SH \"EXAMPLES\"\n{body}"));
    }
    text.push_str(&format!(".SH \"SEE ALSO\"\n{SEE_ALSO}"));
    text.into_bytes()
}

/// EXIT STATUS of the subcommand `sub`'s page (its family's table), or of mailkeep(1) (both).
fn exit_status(sub: Option<&str>) -> String {
    match sub {
        Some(name) => Family::of(Some(name.as_ref())).roff(),
        None => Family::ALL
            .iter()
            .map(|f| format!(".SS \"{}\"\n{}", crate::exit::roff_escape(f.title()), f.roff()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(words: &[&str]) -> String {
        let mut cmd = Cli::command();
        for w in &words[1..] {
            cmd = cmd.find_subcommand(w).expect("a subcommand").clone();
        }
        String::from_utf8(page(words, cmd)).unwrap()
    }

    #[test]
    fn a_subcommand_page_is_named_as_the_command_people_type() {
        let text = render(&["mailkeep", "deliver"]);
        assert!(text.contains(".TH mailkeep-deliver 1"), "{text}");
        assert!(text.contains(".SH NAME\nmailkeep\\-deliver, mailkeep deliver \\- Store one message"), "{text}");
        assert!(text.contains("\\fBmailkeep deliver\\fR"), "synopsis: {text}");
    }

    #[test]
    fn nested_subcommands_point_at_their_pages() {
        let text = render(&["mailkeep", "dedup"]);
        assert!(text.contains("\nmailkeep\\-dedup\\-stats(1)\n"), "{text}");
        assert!(!text.contains("help(1)"), "{text}");
    }

    #[test]
    fn example_transport_passes_recipients_after_the_double_dash_and_keeps_its_indentation() {
        let text = render(&["mailkeep", "deliver"]);
        assert!(text.contains("\\-\\-direction in \\-\\- $pipe_addresses\n"), "{text}");
        assert!(text.contains("\n  driver         = pipe\n"), "{text}");
        assert!(!text.contains("\\-\\-rcpt $pipe_addresses"), "{text}");
    }

    #[test]
    fn example_postfix_service_runs_as_mailbackup_with_the_user_from_the_map_issue_23() {
        let text = render(&["mailkeep", "deliver"]);
        assert!(text.contains("\nmailkeep\\-in unix"), "{text}");
        assert!(text.contains("  flags=qu user=mailbackup null_sender=\n"), "{text}");
        assert!(text.contains("\\-\\-user=${mailbox} \\-\\-direction in"), "{text}");
        assert!(!text.contains("mailkeep\\-out unix"), "only the inbound service: {text}");
    }

    #[test]
    fn exit_status_is_the_family_table() {
        assert!(render(&["mailkeep", "deliver"]).contains(&Family::Delivery.roff()));
        let check = render(&["mailkeep", "check"]);
        assert!(check.contains(&Family::Admin.roff()) && !check.contains("\\fB64\\fR"), "{check}");
        let dedup_stats = render(&["mailkeep", "dedup", "stats"]);
        assert!(dedup_stats.contains(&Family::Admin.roff()), "{dedup_stats}");
        let top = render(&["mailkeep"]);
        assert!(top.contains(&Family::Delivery.roff()) && top.contains(&Family::Admin.roff()), "{top}");
    }
}
