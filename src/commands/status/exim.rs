//! Exim's queue, read for copies that wait for a mailkeep transport: the earliest sign that
//! copies are being deferred (Exim keeps retrying for days before anyone is told).
//!
//! `exim -bp` lists the queued messages, their age and their recipients, a delivered one
//! marked `D`. Which transport a pending recipient waits for is not in that list; the
//! message's log is (`exim -Mvl ID`, see `waits_for_mailkeep`). A message waits for
//! mailkeep when the last line about a recipient's `mailkeep_*` delivery is a deferral. A copy that has not been tried yet (a queue-only submission) is not counted:
//! only deferrals are news. The age is the message's, as `-bp` rounds it (minutes up to
//! 90, hours up to 72, then days).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The prefix of the transports `exim-snippets/` defines (mailkeep_inbox, mailkeep_sent).
const TRANSPORT_NAME: &str = "mailkeep";

/// At most this many message logs are read in one run: a queue of spam bounces must not
/// make a check that runs every few minutes take minutes.
const MAX_LOGS: usize = 1000;

/// What the queue holds for mailkeep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// Queued messages with a copy deferred by a mailkeep transport.
    pub waiting: usize,
    /// The age in seconds of the oldest of them.
    pub oldest: Option<u64>,
    /// All queued messages.
    pub queued: usize,
    /// True when more than `MAX_LOGS` messages had a pending recipient and the rest were not
    /// looked at (`waiting` is then a lower bound).
    pub partial: bool,
}

/// The Exim binary: `given`, else exim4 (Debian) or exim where packages put them.
pub fn binary(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_path_buf());
    }
    let candidates = ["/usr/sbin/exim4", "/usr/sbin/exim", "/usr/bin/exim4", "/usr/bin/exim", "/usr/exim/bin/exim"];
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Reads the queue with `exim`; the error is what Exim said (e.g. not an admin user).
pub fn read(exim: &Path) -> Result<Queue, String> {
    let listing = run(exim, &["-bp"])?;
    let messages = parse_bp(&listing);
    let mut queue = Queue { waiting: 0, oldest: None, queued: messages.len(), partial: false };
    let pending: Vec<&Queued> = messages.iter().filter(|m| m.pending).collect();
    queue.partial = pending.len() > MAX_LOGS;
    let (mut tried, mut unread, mut why) = (0, 0, String::new());
    for message in pending.into_iter().take(MAX_LOGS) {
        tried += 1;
        // A message delivered meanwhile has no log any more: it no longer waits.
        let log = match run(exim, &["-Mvl", &message.id]) {
            Ok(log) => log,
            Err(e) => {
                unread += 1;
                why = e;
                continue;
            }
        };
        if waits_for_mailkeep(&log) {
            queue.waiting += 1;
            queue.oldest = queue.oldest.max(Some(message.age));
        }
    }
    // Not one log could be read (no right to, or `message_logs = false`): "0 waiting"
    // would be a guess.
    if tried > 0 && unread == tried {
        return Err(format!("cannot read the message logs of the {tried} queued messages ({why})"));
    }
    Ok(queue)
}

/// `exim ARGS`' standard output; a failure is its first line of stderr.
fn run(exim: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(exim)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exim.display()))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let first = said.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(format!("{} {} failed ({}): {first}", exim.display(), args.join(" "), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One message of `exim -bp`.
#[derive(Debug, PartialEq, Eq)]
struct Queued {
    id: String,
    age: u64,
    /// A recipient not yet delivered.
    pending: bool,
}

/// Parses `exim -bp`: a message line `25m  2.9K 1tB5yJ-000Abc-Xy <sender> [*** frozen ***]`,
/// then one indented line per recipient, `D ` before a delivered one (`+D ` a generated one).
fn parse_bp(text: &str) -> Vec<Queued> {
    let mut out: Vec<Queued> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let head = (words.next(), words.next(), words.next());
        if let (Some(age), Some(_size), Some(id)) = head
            && let Ok(age) = crate::time::parse_age(age)
            && is_message_id(id)
        {
            out.push(Queued { id: id.to_owned(), age: age.as_secs(), pending: false });
        } else if let Some(message) = out.last_mut()
            && !(trimmed.starts_with("D ") || trimmed.starts_with("+D "))
        {
            message.pending = true;
        }
    }
    out
}

/// An Exim message id: `XXXXXX-XXXXXX-XX` (to 4.96) or `XXXXXX-XXXXXXXXXXX-XXXX` (4.97 on),
/// base-62 digits; anything else is never passed to `-Mvl`.
fn is_message_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    let lengths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    (lengths == [6, 6, 2] || lengths == [6, 11, 4])
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// True when the message log's last word on some recipient's mailkeep copy is a deferral.
/// Exim 4.96 writes, after the date and time, `alice@example.com R=mailkeep_inbox
/// T=mailkeep_inbox defer (0): Child process ... returned 75` for a deferral, `alice@example.com:
/// mailkeep_inbox transport succeeded` for a stored copy, and the transport's error without
/// `defer` for a failure (which no longer waits).
fn waits_for_mailkeep(log: &str) -> bool {
    // Keyed by recipient and transport (one address may have an INBOX and a Sent copy), and
    // read only from the fixed places of a delivery line, so that words elsewhere (a
    // sender's address on the line of the message's arrival) count for nothing.
    let mut last: HashMap<(&str, &str), bool> = HashMap::new();
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.get(2..6) {
            Some([address, router, transport, outcome]) if router.starts_with("R=") => {
                if let Some(name) = transport.strip_prefix("T=").filter(|t| t.starts_with(TRANSPORT_NAME)) {
                    last.insert((address, name), *outcome == "defer");
                }
            }
            _ => {}
        }
        if let Some([address, name, word]) = words.get(2..5)
            && let Some(address) = address.strip_suffix(':')
            && name.starts_with(TRANSPORT_NAME)
            && *word == "transport"
        {
            last.insert((address, name), false);
        }
    }
    last.values().any(|&deferred| deferred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bp_gives_each_message_its_age_and_whether_a_recipient_is_pending() {
        let bp = "\
25m  2.9K 1tB5yJ-000Abc-Xy <alice@example.com>
          D bob@example.net
            carol@example.org

 3h   512 1tB5yK-0000000000A-abCD <> *** frozen ***
          D alice@example.com

 4d  1.1M 1tB5yL-000Abc-Xy <x@y>
        +D alice@example.com
           alice@example.com
";
        assert_eq!(
            parse_bp(bp),
            [
                Queued { id: "1tB5yJ-000Abc-Xy".into(), age: 1500, pending: true },
                Queued { id: "1tB5yK-0000000000A-abCD".into(), age: 10800, pending: false },
                Queued { id: "1tB5yL-000Abc-Xy".into(), age: 4 * 86400, pending: true },
            ]
        );
    }

    /// The lines are Exim 4.96's, from a message whose copies a test Exim deferred.
    #[test]
    fn only_a_last_word_of_deferral_by_a_mailkeep_transport_waits() {
        let deferred = "2026-12-04 21:31:20 Received from sender@example.org U=root P=local S=285\n\
            2026-12-04 21:31:20 alice@example.com R=mailkeep_inbox T=mailkeep_inbox defer (0): Child process of mailkeep_inbox transport returned 75 (could mean temporary error) from command: /bin/sh\n\
            2026-12-04 21:31:20 bob@example.com R=mailkeep_inbox T=mailkeep_inbox defer (0): Child process of mailkeep_inbox transport returned 75 (could mean temporary error) from command: /bin/sh\n";
        assert!(waits_for_mailkeep(deferred));
        let bob_stored = format!("{deferred}2026-12-04 21:31:25 bob@example.com: mailkeep_inbox transport succeeded\n");
        assert!(waits_for_mailkeep(&bob_stored), "alice's copy still deferred");
        let both_stored =
            format!("{bob_stored}2026-12-04 21:46:25 alice@example.com: mailkeep_inbox transport succeeded\n");
        assert!(!waits_for_mailkeep(&both_stored));
        let provider_only =
            "2026-12-04 10:00:01 bob@example.com R=to_provider T=remote_smtp defer (111): Connection refused\n";
        assert!(!waits_for_mailkeep(provider_only));
        assert!(!waits_for_mailkeep(""));
    }

    /// Issue 20 review: words on other lines (a sender's address can hold spaces) never
    /// count, and an INBOX copy stored does not hide the same address's deferred Sent copy.
    #[test]
    fn only_delivery_lines_count_each_for_its_own_transport() {
        let spoof =
            "2026-12-04 21:31:20 Received from \"x T=mailkeep_inbox defer y\"@evil.example U=root P=local S=285\n";
        assert!(!waits_for_mailkeep(spoof));
        let both = "2026-12-04 21:31:20 bob@example.com R=mailkeep_sent T=mailkeep_sent defer (0): returned 75\n\
            2026-12-04 21:31:21 bob@example.com: mailkeep_inbox transport succeeded\n";
        assert!(waits_for_mailkeep(both));
        let stored = "2026-12-04 21:31:20 bob@example.com R=mailkeep_sent T=mailkeep_sent defer (0): returned 75\n\
            2026-12-04 21:41:20 bob@example.com: mailkeep_sent transport succeeded\n";
        assert!(!waits_for_mailkeep(stored));
    }

    #[test]
    fn only_message_ids_reach_exim() {
        assert!(is_message_id("1tB5yJ-000Abc-Xy"));
        assert!(is_message_id("1tB5yK-0000000000A-abCD"));
        for bad in ["-Mrm", "1tB5yJ-000Abc", "1tB5yJ-000Abc-X;", "../../x-000000-00"] {
            assert!(!is_message_id(bad), "{bad}");
        }
    }
}
