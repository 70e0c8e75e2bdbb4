//! `mailkeep dedup stats|prune`: what the admin sees of the Message-ID store of `--dedup`.

use std::io::Write;

use crate::cli::DedupCommand;
use crate::commands::Error;
use crate::dedup::{DedupError, FolderKeys, Location, Store};
use crate::exit::Exit;
use crate::log::escape;

pub fn run(cmd: &DedupCommand) -> Result<Exit, Error> {
    let (DedupCommand::Stats(args) | DedupCommand::Prune(args)) = cmd;
    // Prune writes below the root; stats opens the store as prune does.
    let marker = crate::root::require_existing(&args.root)?;
    let at = Location::new(&args.root, args.dedup_store.as_deref())?;
    let path = at.path();
    let Some(store) = Store::open_existing(&at, args.dedup_window, &marker.id)? else {
        return Err(DedupError::NoStore(path).into());
    };
    let mut text = String::new();
    match cmd {
        DedupCommand::Prune(_) => {
            text = format!("pruned {} keys older than {} days\n", store.prune_all()?, args.dedup_window);
        }
        DedupCommand::Stats(_) => {
            let rows = store.stats()?;
            for FolderKeys { user, folder, keys, oldest, newest } in &rows {
                let (user, folder) = (escape(user), escape(folder));
                text += &format!("user={user} folder={folder} keys={keys} oldest={oldest} newest={newest}\n");
            }
            let total: i64 = rows.iter().map(|r| r.keys).sum();
            let bytes = store.file_size();
            text += &format!("total keys={total} file={} bytes={bytes}\n", escape(&path.display().to_string()));
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(Error::Stdout)?;
    Ok(Exit::Ok)
}
