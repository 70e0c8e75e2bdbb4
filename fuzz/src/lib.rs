//! The parts of mailkeep the fuzz targets drive, compiled from `src/` as they are: the mbox
//! reader, the message and envelope handling. mailkeep is a binary crate, so its modules are
//! included by path; `exit` is a stand-in for the one module that would pull in everything
//! (its `classify` names every error type). Keep the `Exit` variants in step with src/exit.rs.

#![allow(dead_code)]

#[path = "../../src/cli.rs"]
pub mod cli;
#[path = "../../src/envelope.rs"]
pub mod envelope;
#[path = "../../src/mbox.rs"]
pub mod mbox;
#[path = "../../src/message.rs"]
pub mod message;
#[path = "../../src/time.rs"]
pub mod time;

/// Stand-in for src/exit.rs: the exit statuses and the trait, without `classify`.
pub mod exit {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Exit {
        Ok = 0,
        Problems = 1,
        Usage = 64,
        DataErr = 65,
        NoUser = 67,
        CantCreate = 73,
        TempFail = 75,
        Config = 78,
    }

    pub trait Classify {
        fn exit(&self) -> Exit;
    }
}

/// The stored form of a message body as the README states it: CRLF becomes LF (a lone CR
/// stays), and with `drop_final_lf` one final LF goes.
pub fn model_lf(input: &[u8], drop_final_lf: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    if drop_final_lf && out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}
