//! `mailkeep dedup stats|prune`: what the admin sees of the Message-ID store of `--dedup`.

use crate::cli::DedupCommand;
use crate::dedup::{FolderKeys, Store};
use crate::exit::Exit;
use crate::log::escape;

pub fn run(cmd: &DedupCommand) -> anyhow::Result<Exit> {
    let (DedupCommand::Stats(args) | DedupCommand::Prune(args)) = cmd;
    let path = Store::path(&args.root);
    let Some(store) = Store::open_existing(&args.root, args.dedup_window)? else {
        anyhow::bail!("no dedup store at {} (no delivery with --dedup yet)", path.display());
    };
    match cmd {
        DedupCommand::Prune(_) => println!("pruned {} keys older than {} days", store.prune_all()?, args.dedup_window),
        DedupCommand::Stats(_) => {
            let rows = store.stats()?;
            for FolderKeys { user, folder, keys, oldest, newest } in &rows {
                let (user, folder) = (escape(user), escape(folder));
                println!("user={user} folder={folder} keys={keys} oldest={oldest} newest={newest}");
            }
            let total: i64 = rows.iter().map(|r| r.keys).sum();
            let bytes = store.file_size();
            println!("total keys={total} file={} bytes={bytes}", escape(&path.display().to_string()));
        }
    }
    Ok(Exit::Ok)
}
