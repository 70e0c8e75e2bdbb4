//! `mailkeep init`: makes a directory a backup root, so that deliveries can tell it from
//! the empty mount point an unmounted volume leaves (`root.rs`).

use std::io::Write;

use crate::cli::InitArgs;
use crate::commands::Error;
use crate::config::ConfigError;
use crate::exit::Exit;
use crate::maildir::Perms;
use crate::root::{self, Init};

pub fn run(args: &InitArgs) -> Result<Exit, Error> {
    if nix::unistd::geteuid().is_root() && !args.allow_root {
        return Err(ConfigError::RunningAsRoot.into());
    }
    let perms = Perms { shared_group: args.shared_group };
    let root_path = args.root.display();
    let line = match root::init(&args.root, perms, args.adopt, crate::time::now())? {
        Init::Created(m) => format!("initialised backup root {root_path} (id {})\n", m.id),
        Init::Already(m) => format!("{root_path} is already initialised (id {}); nothing changed\n", m.id),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).and_then(|()| out.flush()).map_err(Error::Stdout)?;
    Ok(Exit::Ok)
}
