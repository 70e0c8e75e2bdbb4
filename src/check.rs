//! `mailkeep check`: proves the backup is whole and servable. (Being written: issue 6.)

use crate::cli::CheckArgs;
use crate::exit::Exit;

pub fn run(_args: &CheckArgs) -> anyhow::Result<Exit> {
    anyhow::bail!("mailkeep check is not built yet")
}
