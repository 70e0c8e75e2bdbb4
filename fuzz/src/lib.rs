//! The parts of mailkeep the fuzz targets drive, compiled from `src/` as they are: the mbox
//! reader, the message and envelope handling, and the exit statuses they name. mailkeep is a
//! binary crate, so its modules are included by path.

#![allow(dead_code)]

#[path = "../../src/cli.rs"]
pub mod cli;
#[path = "../../src/envelope.rs"]
pub mod envelope;
#[path = "../../src/fault.rs"]
pub mod fault;
#[path = "../../src/mbox.rs"]
pub mod mbox;
#[path = "../../src/message.rs"]
pub mod message;
#[path = "../../src/time.rs"]
pub mod time;
#[path = "../../src/exit.rs"]
pub mod exit;
