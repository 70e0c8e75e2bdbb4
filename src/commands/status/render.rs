//! A status report in the three forms its readers parse: the Monitoring Plugins output
//! (first line `MAILKEEP <STATE> - text | perfdata`, details below), node_exporter's
//! textfile-collector format, and JSON.

use std::fmt::Write;

use serde_json::json;

use super::{Level, Report};
use crate::time::format_time;

/// Text fit for a plugin line: controls escaped, and no `|` (it starts the perfdata).
fn plugin_text(text: &str) -> String {
    crate::log::escape(text).replace('|', "/")
}

/// The Monitoring Plugins output.
pub fn nagios(r: &Report) -> String {
    let level = r.level();
    let summary = if level == Level::Ok { ok_summary(r) } else { problems(r) };
    let mut out = format!("MAILKEEP {} - {}", level.name(), plugin_text(&summary));
    let perf = perfdata(r);
    if !perf.is_empty() {
        let _ = write!(out, " | {}", perf.join(" "));
    }
    out.push('\n');
    for line in details(r) {
        out.push_str(&plugin_text(&line));
        out.push('\n');
    }
    out
}

/// The findings that are not OK, the worst first.
fn problems(r: &Report) -> String {
    let mut findings: Vec<&super::Finding> = r.findings.iter().filter(|f| f.level != Level::Ok).collect();
    findings.sort_by_key(|f| std::cmp::Reverse(f.level));
    findings.iter().map(|f| f.text.as_str()).collect::<Vec<_>>().join("; ")
}

fn ok_summary(r: &Report) -> String {
    let ago = |t: Option<i64>| t.map_or("none yet".to_owned(), |t| format!("{} ago", crate::time::rough_age(r.age(t))));
    let mut text = format!("newest copy into INBOX {}, into Sent {}", ago(r.newest.inbox), ago(r.newest.sent));
    if let Some(space) = &r.space {
        let _ = write!(text, "; {:.0}% space free", space.free_ratio() * 100.0);
    }
    let _ = write!(text, "; {} users", r.users.len());
    text
}

/// `'label'=value[UOM];warn;crit;min;max` for each measured fact.
fn perfdata(r: &Report) -> Vec<String> {
    let t = r.thresholds;
    let mut out = Vec::new();
    for (label, newest) in [("inbox_age", r.newest.inbox), ("sent_age", r.newest.sent)] {
        if let Some(at) = newest.or(r.created) {
            out.push(format!("'{label}'={}s;{};{};0;", r.age(at), t.warn, t.crit));
        }
    }
    if let Some(space) = &r.space {
        out.push(format!("'free_space'={:.2}%;10:;;0;100", space.free_ratio() * 100.0));
        if let Some(ratio) = space.free_inodes_ratio() {
            out.push(format!("'free_inodes'={:.2}%;10:;;0;100", ratio * 100.0));
        }
        out.push(format!("'free_bytes'={}B;;;0;{}", space.free_bytes, space.size_bytes));
    }
    if r.created.is_some() {
        out.push(format!("'users'={};;;0;", r.users.len()));
    }
    if let Some(silent) = &r.silent_users {
        out.push(format!("'users_without_copies'={};0;;0;", silent.len()));
    }
    if let Some(q) = &r.queue {
        out.push(format!("'exim_queue_waiting'={};;;0;", q.waiting));
        out.push(format!("'exim_queue_oldest'={}s;{};;0;", q.oldest.unwrap_or(0), t.queue_warn));
    }
    out
}

/// The lines after the first: every finding, then the facts.
fn details(r: &Report) -> Vec<String> {
    let mut out: Vec<String> = r.findings.iter().map(|f| format!("{}: {}", f.level.name(), f.text)).collect();
    out.push(format!("root: {}", r.root.display()));
    if let Some(created) = r.created {
        out.push(format!("initialised: {}", format_time(created)));
    }
    if r.created.is_some() {
        for (folder, newest) in [("INBOX", r.newest.inbox), ("Sent", r.newest.sent)] {
            out.push(format!("newest copy into {folder}: {}", newest.map_or("none".into(), format_time)));
        }
        out.push(format!("users: {}", r.users.len()));
    }
    if let Some(s) = &r.space {
        out.push(format!("free: {} of {} bytes, {} of {} inodes", s.free_bytes, s.size_bytes, s.free_inodes, s.inodes));
    }
    for (name, newest) in r.silent_users.iter().flatten() {
        out.push(format!("no copy for {name} since {}", newest.map_or("ever".into(), format_time)));
    }
    if let Some(q) = &r.queue {
        let more = if q.partial { " (the first 1000 looked at)" } else { "" };
        out.push(format!("exim queue: {} messages, {} waiting for mailkeep{more}", q.queued, q.waiting));
    }
    out
}

/// The same facts as one JSON object.
pub fn json(r: &Report, per_user: bool) -> String {
    let level = r.level();
    let mut doc = json!({
        "status": level.name(),
        "code": level.code(),
        "root": r.root.to_string_lossy(),
        "run_timestamp": r.now,
        "initialised": r.created,
        "findings": r.findings.iter().map(|f| json!({"level": f.level.name(), "text": f.text})).collect::<Vec<_>>(),
        "last_stored": {"INBOX": r.newest.inbox, "Sent": r.newest.sent},
        "users": r.created.map(|_| r.users.len()),
        "thresholds": {"warn": r.thresholds.warn, "crit": r.thresholds.crit, "user_warn": r.thresholds.user_warn},
    });
    if let Some(s) = &r.space {
        doc["space"] = json!({
            "free_bytes": s.free_bytes, "size_bytes": s.size_bytes, "free_ratio": s.free_ratio(),
            "free_inodes": s.free_inodes, "inodes": s.inodes, "free_inodes_ratio": s.free_inodes_ratio(),
            "read_only": s.read_only,
        });
    }
    if let Some(silent) = &r.silent_users {
        doc["users_without_copies"] =
            silent.iter().map(|(name, newest)| json!({"user": name, "last_stored": newest})).collect();
    }
    if let Some(q) = &r.queue {
        doc["exim_queue"] =
            json!({"queued": q.queued, "waiting": q.waiting, "oldest_seconds": q.oldest, "partial": q.partial});
    }
    if per_user {
        doc["per_user"] = r
            .users
            .iter()
            .map(|(name, c)| (name.clone(), json!({"INBOX": c.inbox, "Sent": c.sent})))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let mut text = crate::log::escape_json(serde_json::to_string_pretty(&doc).unwrap_or_default());
    text.push('\n');
    text
}

/// One metric family: HELP and TYPE lines, then its samples (none: the family is left out).
fn family(out: &mut String, name: &str, help: &str, samples: &[(String, String)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// A label value as the exposition format writes it.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// node_exporter's textfile-collector format (gauges only).
pub fn prometheus(r: &Report, per_user: bool) -> String {
    let mut out = String::new();
    let one = |v: String| vec![(String::new(), v)];
    let folders = |c: &super::Copies, user: Option<&str>| -> Vec<(String, String)> {
        let user = user.map(|u| format!("user=\"{}\",", label(u))).unwrap_or_default();
        [("INBOX", c.inbox), ("Sent", c.sent)]
            .iter()
            .filter_map(|(f, t)| t.map(|t| (format!("{{{user}folder=\"{f}\"}}"), t.to_string())))
            .collect()
    };
    family(
        &mut out,
        "mailkeep_last_stored_timestamp_seconds",
        "Unix time of the newest copy stored into the folder over all users (mtime of its new/).",
        &folders(&r.newest, None),
    );
    if per_user {
        let samples: Vec<(String, String)> = r.users.iter().flat_map(|(name, c)| folders(c, Some(name))).collect();
        family(
            &mut out,
            "mailkeep_user_last_stored_timestamp_seconds",
            "Unix time of the newest copy stored into the user's folder (mtime of its new/).",
            &samples,
        );
    }
    let initialised = if r.created.is_some() { "1" } else { "0" };
    family(
        &mut out,
        "mailkeep_root_initialised",
        "1 when the root has its marker (is mounted).",
        &one(initialised.into()),
    );
    if let Some(s) = &r.space {
        family(
            &mut out,
            "mailkeep_root_free_bytes",
            "Bytes free on the root's filesystem for non-root users.",
            &one(s.free_bytes.to_string()),
        );
        family(
            &mut out,
            "mailkeep_root_size_bytes",
            "Size of the root's filesystem in bytes.",
            &one(s.size_bytes.to_string()),
        );
        family(
            &mut out,
            "mailkeep_root_free_ratio",
            "Share of the root's filesystem free (0 to 1).",
            &one(s.free_ratio().to_string()),
        );
        family(
            &mut out,
            "mailkeep_root_free_inodes",
            "Inodes free on the root's filesystem.",
            &one(s.free_inodes.to_string()),
        );
        if let Some(ratio) = s.free_inodes_ratio() {
            family(
                &mut out,
                "mailkeep_root_free_inodes_ratio",
                "Share of the root's inodes free (0 to 1).",
                &one(ratio.to_string()),
            );
        }
    }
    if r.created.is_some() {
        family(&mut out, "mailkeep_users", "User directories below the root.", &one(r.users.len().to_string()));
    }
    if let Some(silent) = &r.silent_users {
        family(
            &mut out,
            "mailkeep_users_without_copies",
            "Users listed in --accounts without a copy for --user-warn.",
            &one(silent.len().to_string()),
        );
    }
    if let Some(q) = &r.queue {
        family(
            &mut out,
            "mailkeep_exim_queue_waiting_messages",
            "Queued messages with a deferred mailkeep copy.",
            &one(q.waiting.to_string()),
        );
        family(
            &mut out,
            "mailkeep_exim_queue_oldest_seconds",
            "Age of the oldest queued message with a deferred mailkeep copy.",
            &one(q.oldest.unwrap_or(0).to_string()),
        );
    }
    family(
        &mut out,
        "mailkeep_status",
        "The verdict: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        &one(r.level().code().to_string()),
    );
    family(&mut out, "mailkeep_status_run_timestamp_seconds", "Unix time of this status run.", &one(r.now.to_string()));
    out
}
