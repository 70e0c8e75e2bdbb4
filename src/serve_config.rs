//! `mailkeep serve-config`: a ready IMAP server configuration. (Being written: issue 6.)

use crate::cli::ServeConfigArgs;
use crate::exit::Exit;

pub fn run(_args: &ServeConfigArgs) -> anyhow::Result<Exit> {
    anyhow::bail!("mailkeep serve-config is not built yet")
}
