//! Property tests of the pure functions behind every delivery and replay (issue 8), in
//! process so they can run many cases: the user-name check, the cleaning of envelope values
//! and the header lines built from them (and stripped off again), the CRLF stream cut at any
//! point, and the mbox reader on any bytes and on what an mbox writer makes of any messages.
//! tests/props.rs checks the same promises through the binary, with fewer cases.
//!
//! 12 500 cases per property (137 500 in all) unless PROPTEST_CASES says otherwise.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use proptest::prelude::*;

use mailkeep::envelope::{Sender, User, clean};
use mailkeep::mbox::{Format, MboxReader};
use mailkeep::message::{FromLine, HeaderInfo, LfStream, Stamp, header_block_len, model_lf};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12_500);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Bytes biased towards what matters to paths, headers and mbox framing.
fn tricky_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 1..4),
        2 => prop::sample::select(vec![
            &b"a"[..], b"Z", b"9", b".", b"..", b"/", b"-", b"+", b"=", b"_", b" ", b"\t", b"\n", b"\r", b"\r\n",
            b"\0", b"\x7f", b"\xc3\xa9", b"@", b"<", b">", b"From ", b">From ", b"\n\n", b"MAILER-DAEMON",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}

/// A well-formed header block: fields from a pool that mixes the ones `HeaderInfo` reads
/// (in any case, repeated, folded, empty) with others (Received, Subject, X-...), then a
/// blank line; LF or CRLF line ends.
fn header_block() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(vec![
        "Message-ID",
        "message-id",
        "Date",
        "DATE",
        "X-Gmail-Labels",
        "Return-Path",
        "Received",
        "Subject",
        "From",
        "X-Message-ID",
        "Resent-Message-ID",
        "Resent-Date",
        "Date-Sent",
        "References",
    ]);
    let value = prop::sample::select(vec![
        " <a@b.example>",
        " <x.y@z>",
        "  <spaced@id>  ",
        "",
        " Wed, 1 Jan 2020 00:00:00 +0000",
        " Sat, 28 Nov 2026 23:18:13 -0500",
        " garbage date",
        " from mx.example (mx [192.0.2.1]) by relay; Wed, 1 Jan 2020 00:00:00 +0000",
        " Sent,Inbox",
        " Chat",
        " <>",
        " =?utf-8?q?caf=C3=A9?=",
        " \u{e9}t\u{e9}",
    ]);
    let fold = prop::sample::select(vec!["", "\n\t<folded@id>", "\n continued; Thu, 2 Jan 2020 00:00:00 +0000"]);
    let field = (name, value, fold).prop_map(|(n, v, f)| format!("{n}:{v}{f}\n"));
    (prop::collection::vec(field, 0..12), any::<bool>()).prop_map(|(fields, crlf)| {
        let text = fields.concat() + "\n";
        let text = if crlf { text.replace('\n', "\r\n") } else { text };
        text.into_bytes()
    })
}

/// An envelope recipient: an address (sometimes with a comma at its end, which a fold
/// also leaves) or any bytes.
fn recipient() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            prop::sample::select(vec!["a", "bob.smith", "x+list", "a-very-long-local-part-of-thirty"]),
            prop::sample::select(vec!["x.example", "mail.example.org"]),
            any::<bool>(),
        )
            .prop_map(|(local, domain, comma)| format!("{local}@{domain}{}", if comma { "," } else { "" }).into_bytes()),
        tricky_bytes(16),
    ]
}

/// A message as `deliver` might get it: starting with lines that look like ours, with a
/// space, or with anything, then any bytes.
fn stored_message() -> impl Strategy<Value = Vec<u8>> {
    let start = prop::sample::select(vec![
        &b""[..],
        b"Envelope-To: own@x.example,\n more@y.example\n",
        b"Envelope-To:",
        b" leading space\n",
        b",\n next\n",
        b"Return-Path: <x@y>\n",
        b"Delivered-To: z@y\n",
        b"Subject: s\n\nbody\n",
    ]);
    (start, tricky_bytes(30)).prop_map(|(start, rest)| [start, &rest[..]].concat())
}

/// Reads every message of `file` in `format`.
fn read_mbox(file: &[u8], format: Format) -> Vec<Vec<u8>> {
    let (mut reader, _) = MboxReader::new(file, Path::new("p.mbox"), format).unwrap();
    let mut out = Vec::new();
    while let Some(_start) = reader.next_message().unwrap() {
        let mut body = Vec::new();
        while reader.read_chunk(&mut body).unwrap() {}
        out.push(body);
    }
    out
}

const FROM: &[u8] = b"From writer@example.org Wed Jan  1 00:00:00 2020\n";

/// `msgs` as an mboxrd writer writes them: each after a From_ line, every `>*From ` line
/// quoted once more, and `after` (a blank line, or nothing as mblaze's `mexport`) after each.
fn mboxrd(msgs: &[Vec<u8>], after: &[u8]) -> Vec<u8> {
    let mut file = Vec::new();
    for m in msgs {
        file.extend_from_slice(FROM);
        for line in m.split_inclusive(|&b| b == b'\n') {
            let quotes = line.iter().take_while(|&&b| b == b'>').count();
            if line[quotes..].starts_with(b"From ") {
                file.push(b'>');
            }
            file.extend_from_slice(line);
        }
        file.extend_from_slice(after);
    }
    file
}

/// Message bodies with LF line ends (a reader makes CRLF LF, so CR is left out), each
/// ending in a newline as writers make them.
fn messages() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let line = prop_oneof![
        3 => prop::sample::select(vec![
            &b"Subject: x\n"[..], b"\n", b"body\n", b"From here on\n", b"From a@b Wed Jan  1 00:00:00 2020\n",
            b">From quoted\n", b">>From twice\n", b"\0\xff\n", b" folded\n", b"From \n",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>().prop_filter("no CR", |&b| b != b'\r'), 0..20)
            .prop_map(|mut v| { v.push(b'\n'); v }),
    ];
    prop::collection::vec(prop::collection::vec(line, 0..10).prop_map(|v| v.concat()), 1..6)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn user_names_are_accepted_exactly_when_they_are_one_safe_path_component(raw in tricky_bytes(12)) {
        let valid = (1..=64).contains(&raw.len())
            && raw.iter().all(|&b| b.is_ascii_alphanumeric() || b".-_+=".contains(&b))
            && raw[0] != b'.'
            && !raw.windows(2).any(|w| w == b"..");
        match User::parse(OsStr::from_bytes(&raw)) {
            Ok(user) => {
                prop_assert!(valid, "accepted {:?}", raw.escape_ascii().to_string());
                prop_assert_eq!(user.as_str().as_bytes(), &raw.to_ascii_lowercase()[..]);
                let comps: Vec<_> = Path::new(user.as_str()).components().collect();
                prop_assert!(matches!(comps[..], [Component::Normal(_)]), "{:?}", comps);
            }
            Err(_) => prop_assert!(!valid, "refused {:?}", raw.escape_ascii().to_string()),
        }
    }

    #[test]
    fn envelope_values_reach_header_lines_only_cleaned(
        sender in tricky_bytes(8),
        owner in tricky_bytes(8),
        rcpts in prop::collection::vec(tricky_bytes(6), 0..6),
        sent in any::<bool>(),
    ) {
        let c = clean(&sender);
        prop_assert_eq!(c.len(), sender.len());
        prop_assert!(!c.iter().any(|&b| b < 0x20 || b == 0x7f));
        let s = Sender::from_bytes(&sender);
        let lines = Stamp { sender: &s, owner: &owner, envelope_to: sent.then_some(&rcpts[..]) }.header_lines();
        prop_assert!(lines.ends_with(b"\n"));
        let text = &lines[..lines.len() - 1];
        for line in text.split(|&b| b == b'\n') {
            prop_assert!(!line.iter().any(|&b| b < 0x20 || b == 0x7f), "control byte in {}", line.escape_ascii());
            let ours = line.starts_with(b"Return-Path: <") || line.starts_with(b"Delivered-To: ")
                || line.starts_with(b"Envelope-To:") || line.starts_with(b" ");
            prop_assert!(ours, "not one of our lines: {}", line.escape_ascii());
        }
        let mut want = b"Return-Path: <".to_vec();
        want.extend(s.address().map(clean).unwrap_or_default());
        want.extend_from_slice(b">\nDelivered-To: ");
        want.extend(clean(&owner));
        if sent && !rcpts.is_empty() {
            want.extend_from_slice(b"\nEnvelope-To: ");
            want.extend(rcpts.iter().map(|r| clean(r)).collect::<Vec<_>>().join(&b", "[..]));
        }
        // Unfolded, the lines say exactly this.
        let unfolded: Vec<u8> = text.split(|&b| b == b'\n').enumerate().flat_map(|(i, l)| {
            let sep: &[u8] = if i == 0 || l.starts_with(b" ") { b"" } else { b"\n" };
            [sep, l].concat()
        }).collect();
        prop_assert_eq!(unfolded.escape_ascii().to_string(), want.escape_ascii().to_string());
    }

    #[test]
    fn stripping_our_header_lines_gives_back_the_message(
        sender in tricky_bytes(8),
        owner in tricky_bytes(8),
        rcpts in prop::collection::vec(recipient(), 0..10),
        sent in any::<bool>(),
        message in stored_message(),
    ) {
        let s = Sender::from_bytes(&sender);
        let lines = Stamp { sender: &s, owner: &owner, envelope_to: sent.then_some(&rcpts[..]) }.header_lines();
        let with_envelope_to = sent && !rcpts.is_empty();
        // The one case the stored form cannot tell (see `Stamp::lines_len`).
        let last_ends_in_comma = rcpts.last().is_some_and(|r| r.ends_with(b","));
        prop_assume!(!(with_envelope_to && last_ends_in_comma && message.starts_with(b" ")));
        let stored = [&lines[..], &message].concat();
        prop_assert_eq!(Stamp::lines_len(&stored, with_envelope_to), lines.len());
        prop_assert_eq!(Stamp::strip(&stored, with_envelope_to).escape_ascii().to_string(), message.escape_ascii().to_string());
    }

    #[test]
    fn crlf_stream_gives_the_model_however_the_input_is_cut(
        input in tricky_bytes(60),
        cuts in prop::collection::vec(0usize..12, 0..20),
        drop_final in any::<bool>(),
    ) {
        let mut s = LfStream::new(drop_final);
        let mut out = Vec::new();
        let mut rest = &input[..];
        for n in cuts {
            let n = n.min(rest.len());
            s.push(&rest[..n], &mut out);
            rest = &rest[n..];
        }
        s.push(rest, &mut out);
        s.finish(&mut out);
        prop_assert_eq!(out.escape_ascii().to_string(), model_lf(&input, drop_final).escape_ascii().to_string());
    }

    #[test]
    fn mboxrd_written_messages_are_read_back_exactly(msgs in messages()) {
        let file = mboxrd(&msgs, b"\n");
        prop_assert_eq!(read_mbox(&file, Format::Mboxrd), msgs.clone());
        // With CRLF line ends the same messages come back with LF.
        let crlf: Vec<u8> = file.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
        prop_assert_eq!(read_mbox(&crlf, Format::Mboxrd), msgs);
    }

    /// As mblaze's `mexport` writes them: mboxrd with no blank line between messages. Only
    /// a blank line that ends a message is lost, as to any mbox reader: the one before a
    /// From_ line, and the last one of the file, belong to the separator. An empty message
    /// is left out: without a blank line, a From_ line right after a message's own is that
    /// message's first line (a tool that added its own From_ line writes two in a row).
    #[test]
    fn mboxrd_written_without_blank_lines_between_messages_is_read_back(msgs in messages()) {
        let msgs: Vec<Vec<u8>> = msgs.into_iter().filter(|m| !m.is_empty()).collect();
        let file = mboxrd(&msgs, b"");
        let want: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| if m == b"\n" || m.ends_with(b"\n\n") { m[..m.len() - 1].to_vec() } else { m.clone() })
            .collect();
        prop_assert_eq!(read_mbox(&file, Format::Mboxrd), want.clone());
        prop_assert_eq!(read_mbox(&file, Format::Auto), want);
    }

    #[test]
    fn mboxcl2_written_messages_are_read_back_exactly(msgs in messages()) {
        let mut file = Vec::new();
        let mut want = Vec::new();
        for (i, body) in msgs.iter().enumerate() {
            let head = format!("X-N: {i}\nContent-Length: {}\n\n", body.len()).into_bytes();
            file.extend_from_slice(FROM);
            file.extend_from_slice(&head);
            file.extend_from_slice(body);
            file.push(b'\n');
            want.push([&head[..], body].concat());
        }
        prop_assert_eq!(read_mbox(&file, Format::Mboxcl2), want);
    }

    #[test]
    fn mbox_reader_survives_any_bytes_in_every_format(file in tricky_bytes(80), sel in 0usize..4) {
        let format = [Format::Auto, Format::Mboxo, Format::Mboxrd, Format::Mboxcl2][sel];
        let data = [FROM, &file[..]].concat();
        let (mut reader, _) = MboxReader::new(&data[..], Path::new("p.mbox"), format).unwrap();
        let mut total = 0;
        let mut messages = 0;
        loop {
            match reader.next_message() {
                Ok(Some(start)) => prop_assert!(data[start.offset as usize..].starts_with(b"From ")),
                Ok(None) => break,
                Err(_) => break,
            }
            messages += 1;
            prop_assert!(messages <= data.len());
            let mut body = Vec::new();
            loop {
                match reader.read_chunk(&mut body) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => { let _ = reader.resync(); break; }
                }
            }
            total += body.len();
            prop_assert!(total <= data.len());
        }
    }

    #[test]
    fn header_parsers_never_panic_and_agree_on_the_block(head in tricky_bytes(60)) {
        if let Some(n) = header_block_len(&head) {
            let block = &head[..n];
            prop_assert!(block == b"\n" || block == b"\r\n" || block.ends_with(b"\n\n") || block.ends_with(b"\n\r\n"));
        }
        let _ = HeaderInfo::parse(&head);
        let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
        prop_assert_eq!(FromLine::parse(first).is_some(), first.starts_with(b"From "));
        if FromLine::looks_like_separator(first) {
            prop_assert!(first.starts_with(b"From "));
        }
        if FromLine::is_complete(first) {
            prop_assert!(FromLine::looks_like_separator(first), "a complete From_ line is a separator after a blank line too");
        }
    }

    #[test]
    fn reading_only_the_wanted_fields_gives_what_the_whole_block_gives(block in header_block()) {
        // mail-parser takes the last of repeated fields, we the first (issue 18): compare
        // with the whole block less each field's later repeats.
        let mut seen = std::collections::HashSet::new();
        let mut firsts = Vec::new();
        let mut keep = true;
        for line in block.split_inclusive(|&b| b == b'\n') {
            if !matches!(line.first(), Some(b' ' | b'\t')) {
                let name = line.split(|&b| b == b':').next().unwrap_or_default().trim_ascii_end();
                keep = line.contains(&b':') && seen.insert(name.to_ascii_lowercase()) || !line.contains(&b':');
            }
            if keep {
                firsts.extend_from_slice(line);
            }
        }
        prop_assert_eq!(HeaderInfo::parse(&block), HeaderInfo::from_fields(&firsts));
    }

    #[test]
    fn sender_is_null_exactly_for_the_null_forms(raw in tricky_bytes(8)) {
        let t = raw.trim_ascii();
        let inner = t.strip_prefix(b"<").and_then(|r| r.strip_suffix(b">")).unwrap_or(t);
        let null = inner.is_empty() || inner.eq_ignore_ascii_case(b"MAILER-DAEMON");
        let s = Sender::from_bytes(&raw);
        prop_assert_eq!(s.address().is_none(), null);
        if let Some(a) = s.address() {
            prop_assert_eq!(a, &clean(inner)[..]);
        }
    }
}
