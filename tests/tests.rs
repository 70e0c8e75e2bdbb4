//! Integration tests: the real `mailkeep` binary, run in a temp dir with a cleaned
//! environment, checked by its files and exit status (and by Python's `mailbox`).

mod util;

mod accounts;
mod check;
mod core_props;
mod dedup;
mod deliver;
mod escape;
mod exit_codes;
mod export;
mod faults;
mod init;
mod lmtp;
mod multirelay;
mod props;
mod replay;
mod retention;
mod seal;
mod serve_config;
mod status;
mod stress;
