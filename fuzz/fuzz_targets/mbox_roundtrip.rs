//! Messages written as an mboxrd file (From_ lines, `>`-escaping of every `>*From ` line, a
//! blank line between messages) are read back exactly, whatever their bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailkeep_fuzz::mbox::{Format, MboxReader};

fuzz_target!(|data: &[u8]| {
    // Messages are separated by 0xFF in the input; CRs are dropped (the reader makes CRLF
    // LF, so a CR would not come back), and each message ends with a newline.
    let messages: Vec<Vec<u8>> = data
        .split(|&b| b == 0xff)
        .take(16)
        .map(|m| {
            let mut m: Vec<u8> = m.iter().copied().filter(|&b| b != b'\r').collect();
            if !m.ends_with(b"\n") {
                m.push(b'\n');
            }
            m
        })
        .collect();
    // Every message, the last one too, is followed by a blank line (as mbox writers do).
    let mut file = Vec::new();
    for m in &messages {
        file.extend_from_slice(b"From fuzz@example.org Wed Jan  1 00:00:00 2020\n");
        for line in m.split_inclusive(|&b| b == b'\n') {
            let quotes = line.iter().take_while(|&&b| b == b'>').count();
            if line[quotes..].starts_with(b"From ") {
                file.push(b'>');
            }
            file.extend_from_slice(line);
        }
        file.push(b'\n');
    }
    let (mut reader, _) = MboxReader::new(&file[..], Path::new("rt.mbox"), Format::Mboxrd).unwrap();
    let mut got = Vec::new();
    while let Some(_start) = reader.next_message().unwrap() {
        let mut body = Vec::new();
        while reader.read_chunk(&mut body).unwrap() {}
        got.push(body);
    }
    assert_eq!(got.len(), messages.len(), "message count; file:\n{}", file.escape_ascii());
    for (i, (g, m)) in got.iter().zip(&messages).enumerate() {
        assert_eq!(g, m, "message {i} differs:\n{}\nvs\n{}", g.escape_ascii(), m.escape_ascii());
    }
});
