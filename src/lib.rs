//! mailkeep keeps a durable, IMAP-servable Maildir backup of every mail a relay passes.
//!
//! The crate is in two layers. The core below stores and reads mail and knows nothing of
//! the command line: the Maildir writer, the header rules, the mbox reader, the dedup
//! store, dates, log lines and the exit-status contract. The commands above it
//! (`commands/`) turn the command line into settings (`cli`, `config`) and drive the core;
//! no command imports another. docs/ARCHITECTURE.md draws the layers and the data flow.

// The core.
pub mod audit;
pub mod dedup;
pub mod delivery;
pub mod envelope;
pub mod exit;
pub mod fault;
pub mod fsutil;
pub mod holds;
pub mod lmtp;
pub mod log;
pub mod maildir;
pub mod mbox;
pub mod message;
pub mod parallel;
pub mod removal;
pub mod root;
pub mod seal;
pub mod time;

// Process start-up, the command line, and the commands.
pub mod cli;
pub mod commands;
pub mod config;
pub mod start;
