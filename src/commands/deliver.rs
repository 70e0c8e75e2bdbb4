//! One delivery, as Exim's pipe transport runs it: read the message on stdin, strip what
//! Exim's default prefix and suffix added, prepend our header lines, store it durably
//! (the store step is the core's `delivery`, which `lmtp` shares).

use std::io::Read;

use crate::commands::Error;
use crate::config::DeliverConfig;
pub use crate::delivery::DeliverError;
use crate::delivery::{self, Delivery, Head};
use crate::exit::Exit;
use crate::log::Logger;

/// `mailkeep deliver`: the settings, then one delivery of the message on stdin.
pub fn run_args(args: &crate::cli::DeliverArgs) -> Result<Exit, Error> {
    let cfg = DeliverConfig::resolve(args)?;
    let logger = Logger::new(cfg.store.log);
    run(&cfg, &mut std::io::stdin().lock(), &logger)?;
    Ok(Exit::Ok)
}

/// Runs one delivery and logs its one line.
pub fn run(cfg: &DeliverConfig, input: &mut impl Read, logger: &Logger) -> Result<(), Error> {
    let d = Delivery {
        root: &cfg.store.root,
        user: &cfg.store.user,
        perms: cfg.store.perms,
        folder: cfg.folder,
        sender: cfg.sender.as_ref(),
        rcpts: &cfg.rcpts,
        dedup_window: cfg.dedup_window,
        dedup_store: &cfg.dedup_store,
        root_id: &cfg.store.root_id,
    };
    match Head::read(input) {
        Ok(head) => delivery::deliver_logged(&d, head, input, None, logger).map(|_| ()).map_err(Error::from),
        Err(e) => {
            let result = Err(DeliverError::ReadInput(e));
            delivery::log(&d, None, &result, logger);
            result.map(|_| ()).map_err(Error::from)
        }
    }
}
