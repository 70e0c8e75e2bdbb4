//! Any bytes as an mbox file, in each format: the reader never panics or loops, hands out
//! no more bytes than the file has, and every message it reports starts at a From_ line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailkeep_fuzz::mbox::{Format, MboxReader};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, file)) = data.split_first() else { return };
    let format = [Format::Auto, Format::Mboxo, Format::Mboxrd, Format::Mboxcl2][usize::from(sel % 4)];
    let Ok((mut reader, _why)) = MboxReader::new(file, Path::new("fuzz.mbox"), format) else { return };
    let mut total = 0usize;
    let mut messages = 0usize;
    loop {
        let start = match reader.next_message() {
            Ok(Some(start)) => start,
            Ok(None) => break,
            Err(_) => {
                if reader.resync().is_err() {
                    break;
                }
                continue;
            }
        };
        messages += 1;
        assert!(messages <= file.len(), "more messages than bytes");
        assert!(file[start.offset as usize..].starts_with(b"From "), "a message that does not start at a From_ line");
        let mut body = Vec::new();
        loop {
            match reader.read_chunk(&mut body) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    let _ = reader.resync();
                    break;
                }
            }
            assert!(body.len() <= file.len(), "a message longer than the file");
        }
        total += body.len();
        assert!(total <= file.len(), "more bytes handed out than the file has");
    }
});
