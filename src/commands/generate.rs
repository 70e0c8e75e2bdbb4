//! Man pages and shell completions generated from the clap definition, so they can never
//! drift from `--help`; the sections clap does not know (EXIT STATUS, FILES, EXAMPLES,
//! SEE ALSO) are written here once.

use std::fs;
use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs, Generated};
use crate::exit::Exit;

const EXIT_STATUS: &str = "\
.TP\n\\fB0\\fR\nthe message is stored and durable (deliver, replay); the backup is clean (check)\n\
.TP\n\\fB1\\fR\ncheck found problems; accounts sync refused to shrink the file\n\
.TP\n\\fB64\\fR\nbad usage\n\
.TP\n\\fB65\\fR\nbad data: an empty message, a file that is not an mbox, a broken message\n\
.TP\n\\fB66\\fR\nan input file of replay is missing, unreadable or a directory (nothing is stored)\n\
.TP\n\\fB67\\fR\nunknown or unsafe user\n\
.TP\n\\fB73\\fR\na path below the root is a symlink or not a directory (Exim retries)\n\
.TP\n\\fB75\\fR\nanything temporary or unknown: I/O error, full disk, quota, dedup store busy, a bug (Exim retries)\n\
.TP\n\\fB78\\fR\nconfiguration: root missing, run as root without \\-\\-allow\\-root, key file readable by others\n";

const FILES: &str = "\
.TP\n\\fIROOT\\fR/\\fIuser\\fR/{cur,new,tmp}\nthe user's INBOX (Maildir)\n\
.TP\n\\fIROOT\\fR/\\fIuser\\fR/.Sent/\nthe Maildir++ folder of sent mail; .Chats/ for replayed chats\n\
.TP\n\\fIROOT\\fR/\\fIuser\\fR/subscriptions, courierimapsubscribed\nthe folders Dovecot and Courier show as subscribed\n\
.TP\n\\fIROOT\\fR/.mailkeep/dedup.sqlite3\nthe Message-ID store of \\-\\-dedup\n\
.TP\n/usr/share/doc/mailkeep/examples/\nExim router and transport snippets\n";

const EXAMPLES: &str = "\
The Exim pipe transport for the inbound copy (see /usr/share/doc/mailkeep/examples/):\n\
.PP\n.nf\n\
backup_pipe_in:\n\
  driver         = pipe\n\
  command        = /usr/bin/mailkeep deliver \\-\\-root /var/lib/mailkeep \\e\n\
                   \\-\\-user ${lc:${lookup{$local_part}lsearch,ret=key{/etc/exim4/mailkeep/accounts}}} \\e\n\
                   \\-\\-direction in \\-\\-rcpt $pipe_addresses\n\
  user           = mailbackup\n\
  message_prefix =\n\
  message_suffix =\n\
  temp_errors    = 75:73\n\
  timeout_defer\n\
.fi\n\
.PP\n\
Load a Google Takeout export:\n\
.PP\n.nf\n\
mailkeep replay \\-\\-root /var/lib/mailkeep \\-\\-user alice \\-\\-domain example.com All\\e mail.mbox\n\
.fi\n";

const SEE_ALSO: &str = "\\fBexim4\\fR(8), \\fBmaildir\\fR(5), \\fBdovecot\\fR(1), \\fBmailkeep\\fR(1)\n";

pub fn generate(args: &GenerateArgs) -> anyhow::Result<Exit> {
    fs::create_dir_all(&args.dir)?;
    match args.what {
        Generated::Man => man_pages(&args.dir)?,
        Generated::Completions => {
            for shell in [Shell::Bash, Shell::Zsh] {
                clap_complete::generate_to(shell, &mut Cli::command(), "mailkeep", &args.dir)?;
            }
        }
    }
    Ok(Exit::Ok)
}

/// mailkeep.1, and mailkeep-<sub>.1 for every visible subcommand.
fn man_pages(dir: &Path) -> anyhow::Result<()> {
    let root = Cli::command();
    write_page(dir, "mailkeep", root.clone())?;
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("mailkeep-{}", sub.get_name());
        write_page(dir, &name, sub.clone().name(name.clone()))?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, cmd: clap::Command) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).section("1").manual("mailkeep").render(&mut out)?;
    for (title, body) in
        [("EXIT STATUS", EXIT_STATUS), ("FILES", FILES), ("EXAMPLES", EXAMPLES), ("SEE ALSO", SEE_ALSO)]
    {
        write!(out, ".SH \"{title}\"\n{body}")?;
    }
    fs::write(dir.join(format!("{name}.1")), out)?;
    Ok(())
}
