//! `mailkeep accounts sync`: the accounts file from the provider's directory. (Being
//! written: issue 9.)

use crate::cli::AccountsSyncArgs;
use crate::exit::Exit;

pub fn sync(_args: &AccountsSyncArgs) -> anyhow::Result<Exit> {
    anyhow::bail!("mailkeep accounts sync is not built yet")
}
