//! `mailkeep serve-config dovecot`: the day the provider is gone, one command gives a
//! ready Dovecot configuration that serves every user's backup over IMAP.
//!
//! It writes, into `--out`: `dovecot.conf` (standalone, nothing of /etc/dovecot is read;
//! ends with `!include_try local.conf` for the admin's TLS and other overrides, which it
//! never writes) and `passwd` (Dovecot passwd-file, one `{SSHA512}` hash per user). Each
//! user gets a fresh random password from the kernel (ring's `SystemRandom`), printed once
//! on stdout. The hash is computed here (salted SHA-512 by `ring`, which Dovecot reads
//! natively) so that nothing depends on an outside tool; the passwords are 100 random bits,
//! so one salted round is enough.
//! It runs as root: OUT and both files are written through a descriptor of OUT, never by
//! path (`fsutil`), so whoever can write into OUT cannot make it write anywhere else.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::digest::{SHA512, digest};
use ring::rand::{SecureRandom, SystemRandom};

use crate::cli::{ImapServer, ServeConfigArgs, UsageError};
use crate::commands::Error;
use crate::envelope::User;
use crate::exit::Exit;
use crate::fsutil;
use crate::log::stderr_line;

/// Password characters: no 0/O, 1/l/I, so a password read aloud or off paper survives.
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const PASSWORD_LEN: usize = 20;
/// Longest `--out`: Dovecot's Unix sockets live in OUT/run/ (sun_path holds 107 bytes).
const OUT_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read backup root {}: {err}", path.display())]
    Root { path: PathBuf, err: io::Error },
    #[error("backup root {} belongs to root: chown it (and all below) to the user mailkeep delivers as", .0.display())]
    RootOwned(PathBuf),
    #[error("no users below {}: nothing to serve", .0.display())]
    NoUsers(PathBuf),
    #[error("path {} cannot go into a Dovecot config: it contains '{ch}'", path.display())]
    UnsafePath { path: PathBuf, ch: char },
    #[error("--out {} is too long: Dovecot's sockets below it need paths under 108 bytes", .0.display())]
    OutTooLong(PathBuf),
    #[error("--out {} must end in a directory's name (not '..' or '/')", .0.display())]
    OutNotAName(PathBuf),
    #[error("--out {} is a symbolic link: give the directory itself (as root, serve-config follows no link at OUT)", .0.display())]
    OutSymlink(PathBuf),
    #[error("cannot write {}: {err}", path.display())]
    Write { path: PathBuf, err: io::Error },
    #[error("the system's random number source (getrandom) failed")]
    Random,
}

impl crate::exit::Classify for ServeError {
    /// What the admin must fix is configuration; I/O may work on the next try.
    fn exit(&self) -> Exit {
        match self {
            ServeError::RootOwned(_)
            | ServeError::NoUsers(_)
            | ServeError::UnsafePath { .. }
            | ServeError::OutTooLong(_)
            | ServeError::OutNotAName(_)
            | ServeError::OutSymlink(_) => Exit::Config,
            // A root that is not there is the admin's to fix; anything else may pass.
            ServeError::Root { err, .. }
                if matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) =>
            {
                Exit::Config
            }
            ServeError::Root { .. } | ServeError::Write { .. } | ServeError::Random => Exit::TempFail,
        }
    }
}

/// What the generated configuration serves.
#[derive(Debug)]
pub struct Plan {
    pub root: PathBuf,
    pub out: PathBuf,
    /// OUT, opened without following a symlink: both files are written through it.
    pub out_dir: OwnedFd,
    pub listen: IpAddr,
    pub port: u16,
    pub uid: u32,
    pub gid: u32,
    pub users: Vec<String>,
}

pub fn run(args: &ServeConfigArgs) -> Result<Exit, Error> {
    let ImapServer::Dovecot = args.server;
    let listen: IpAddr =
        args.listen.parse().map_err(|_| UsageError(format!("--listen \"{}\" is not an IP address", args.listen)))?;
    let plan = plan(&args.root, &args.out, listen, args.port)?;
    let mut passwd = String::new();
    let mut shown = String::new();
    for user in &plan.users {
        let password = random_password()?;
        let salt = random_bytes::<16>()?;
        passwd.push_str(&format!("{user}:{}\n", ssha512(password.as_bytes(), &salt)));
        shown.push_str(&format!("{user}\t{password}\n"));
    }
    let conf_path = plan.out.join("dovecot.conf");
    let passwd_path = plan.out.join("passwd");
    let owner = dovecot_owner();
    write_file(&plan, "passwd", passwd.as_bytes(), 0o640, owner)?;
    if owner.is_none() {
        stderr_line(&format!(
            "note: make {} readable by group dovecot (chgrp dovecot) before starting Dovecot",
            passwd_path.display()
        ));
    }
    write_file(&plan, "dovecot.conf", dovecot_conf(&plan).as_bytes(), 0o644, None)?;
    let mut out = io::stdout().lock();
    write!(
        out,
        "# wrote {} and {}: {} users, served as uid {} gid {} on {}:{}\n\
         # start: dovecot -c {0}    stop: doveadm -c {0} stop\n\
         # the passwords, shown only now ({1} keeps only hashes):\n{shown}",
        conf_path.display(),
        passwd_path.display(),
        plan.users.len(),
        plan.uid,
        plan.gid,
        plan.listen,
        plan.port,
    )
    .and_then(|()| out.flush())
    .map_err(Error::Stdout)?;
    Ok(Exit::Ok)
}

/// Finds the users and the owner of the backup, and makes `out`.
pub fn plan(root: &Path, out: &Path, listen: IpAddr, port: u16) -> Result<Plan, ServeError> {
    let root_err = |err| ServeError::Root { path: root.to_path_buf(), err };
    let root = fs::canonicalize(root).map_err(root_err)?;
    let meta = fs::metadata(&root).map_err(root_err)?;
    if meta.uid() == 0 {
        return Err(ServeError::RootOwned(root));
    }
    let mut users = Vec::new();
    for entry in fs::read_dir(&root).map_err(root_err)? {
        let entry = entry.map_err(root_err)?;
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let user = User::parse(&name).ok().filter(|u| name == u.as_str());
        match (is_dir, user) {
            (false, _) => {}
            (true, Some(u)) => {
                if entry.metadata().is_ok_and(|m| m.uid() != meta.uid()) {
                    let path = entry.path();
                    stderr_line(&format!(
                        "warning: {} is not owned by uid {}, as which Dovecot serves",
                        path.display(),
                        meta.uid()
                    ));
                }
                users.push(u.as_str().to_owned())
            }
            (true, None) if name == "lost+found" || name.as_encoded_bytes()[0] == b'.' => {}
            (true, None) => {
                stderr_line(&format!("skipping {}: not a user name mailkeep delivers to", entry.path().display()))
            }
        }
    }
    if users.is_empty() {
        return Err(ServeError::NoUsers(root));
    }
    users.sort();
    // Checked before anything is made: a refused OUT leaves nothing behind.
    config_safe(out)?;
    let out_dir = open_out(out)?;
    let out = fs::canonicalize(out).map_err(|err| ServeError::Write { path: out.to_path_buf(), err })?;
    for p in [&root, &out] {
        config_safe(p)?;
    }
    if out.as_os_str().len() > OUT_MAX {
        return Err(ServeError::OutTooLong(out));
    }
    Ok(Plan { root, out, out_dir, listen, port, uid: meta.uid(), gid: meta.gid(), users })
}

/// Opens OUT, making it (0755) when missing; a symlink at OUT is refused. OUT is taken by
/// its components: the kernel follows a symlink named with a trailing `/` (or `/.`), which
/// O_NOFOLLOW would then not see, and a last component `..` is refused.
fn open_out(out: &Path) -> Result<OwnedFd, ServeError> {
    let last_is_a_name = matches!(out.components().next_back(), Some(std::path::Component::Normal(_)));
    if !last_is_a_name {
        return Err(ServeError::OutNotAName(out.to_path_buf()));
    }
    let out: PathBuf = out.components().collect();
    let out = out.as_path();
    fsutil::create_dir_all(out, 0o755).map_err(|err| {
        let is_link = fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            ServeError::OutSymlink(out.to_path_buf())
        } else {
            ServeError::Write { path: out.to_path_buf(), err }
        }
    })
}

/// A path goes into dovecot.conf unquoted and into `mail_location`, where `%` expands
/// and `:` separates parameters: allow only characters with no meaning there.
fn config_safe(path: &Path) -> Result<(), ServeError> {
    let text = path.to_string_lossy();
    let ok = |c: char| c.is_ascii_alphanumeric() || "/._-+=@,".contains(c);
    match text.chars().find(|&c| !ok(c)) {
        None => Ok(()),
        Some(ch) => Err(ServeError::UnsafePath { path: path.to_path_buf(), ch }),
    }
}

pub fn dovecot_conf(p: &Plan) -> String {
    let (root, out, uid, gid) = (p.root.display(), p.out.display(), p.uid, p.gid);
    let (listen, port) = (p.listen, p.port);
    let tls = if p.listen.is_loopback() {
        "Listening on loopback only: Dovecot accepts passwords there without TLS."
    } else {
        "Not loopback: until you set up TLS, Dovecot refuses every password (plaintext)."
    };
    format!(
        r#"# Dovecot configuration written by `mailkeep serve-config dovecot`: serves the mailkeep
# backup {root} over IMAP. Standalone: nothing of /etc/dovecot is read.
#
#   start:  dovecot -c {out}/dovecot.conf      (-F stays in the foreground)
#   stop:   doveadm -c {out}/dovecot.conf stop
#
# Users log in with their name (alice) or address (alice@example.com) and the password
# serve-config printed; {out}/passwd keeps only salted hashes. Running serve-config
# again writes new passwords for everybody.
#
# Mail is served read-write as uid {uid}, gid {gid}, the owner of the backup: clients set
# flags and Dovecot moves new/ to cur/, while mailkeep goes on delivering.
# Your own settings (TLS, other paths) go into {out}/local.conf, read last; serve-config
# never writes that file.

instance_name = mailkeep
base_dir = {out}/run
state_dir = {out}/state
log_path = {out}/dovecot.log
protocols = imap
listen = {listen}

mail_location = maildir:{root}/%n
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}

auth_username_format = %Ln
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 {out}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/%n
}}

namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \Sent
  }}
}}

service imap-login {{
  inet_listener imap {{
    address = {listen}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}

# TLS is left to you. {tls}
# To serve other hosts, put into {out}/local.conf (with your certificate):
#   ssl = required
#   ssl_cert = </etc/ssl/certs/imap.example.com.pem
#   ssl_key = </etc/ssl/private/imap.example.com.key
#   service imap-login {{
#     inet_listener imaps {{
#       port = 993
#     }}
#   }}
ssl = no
!include_try local.conf
"#
    )
}

/// Replaces OUT/`name` atomically with `data`, created with `mode` and `owner` (fsutil).
fn write_file(plan: &Plan, name: &str, data: &[u8], mode: u32, owner: fsutil::Owner) -> Result<(), ServeError> {
    fsutil::replace_file(plan.out_dir.as_fd(), OsStr::new(name), data, mode, owner)
        .map_err(|err| ServeError::Write { path: plan.out.join(name), err })
}

/// Dovecot's auth process runs as user dovecot: the passwd file goes to root, group
/// dovecot, when we may (as root) and the group exists. Otherwise the admin does it.
fn dovecot_owner() -> fsutil::Owner {
    let group = nix::unistd::Group::from_name("dovecot").ok().flatten()?;
    nix::unistd::geteuid().is_root().then(|| (0, group.gid.as_raw()))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ServeError> {
    let mut buf = [0u8; N];
    SystemRandom::new().fill(&mut buf).map_err(|_| ServeError::Random)?;
    Ok(buf)
}

/// 20 characters of a 32-character alphabet: 100 random bits.
fn random_password() -> Result<String, ServeError> {
    let bytes = random_bytes::<PASSWORD_LEN>()?;
    Ok(bytes.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])).collect())
}

/// Dovecot's `{SSHA512}`: base64 (RFC 4648, padded) of SHA-512(password + salt) followed by
/// the salt. Not crypt(3)'s `$6$`: that one has its own alphabet and 5000 rounds.
pub fn ssha512(password: &[u8], salt: &[u8]) -> String {
    let mut data = password.to_vec();
    data.extend_from_slice(salt);
    let mut raw = digest(&SHA512, &data).as_ref().to_vec();
    raw.extend_from_slice(salt);
    format!("{{SSHA512}}{}", STANDARD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssha512_matches_a_reference_hash_that_dovecot_verifies() {
        // From openssl (and Python's hashlib + base64), then checked with
        // `doveadm pw -t '<hash>' -p 'correct horse'`: "(verified)".
        //   ( (printf 'correct horse'; cat salt) | openssl dgst -sha512 -binary; cat salt ) | base64
        // with salt = the bytes 0..=15.
        let salt: Vec<u8> = (0..16).collect();
        assert_eq!(
            ssha512(b"correct horse", &salt),
            "{SSHA512}RxX5hhIRRRK2fhVkXkwzRVPVrymNjBPeOec5l5Z7HoA1jxGKFYfpQLhcljmxJcIS20C9nDeAN3dRZ7qr\
             c68T8wABAgMEBQYHCAkKCwwNDg8="
        );
    }

    #[test]
    fn ssha512_is_hash_then_salt() {
        let h = ssha512(b"secret", b"salt");
        assert!(h.starts_with("{SSHA512}"));
        assert_eq!(h.len(), "{SSHA512}".len() + 92); // 68 bytes in base64
        let raw = STANDARD.decode(&h["{SSHA512}".len()..]).unwrap();
        assert_eq!(&raw[64..], b"salt");
    }

    #[test]
    fn passwords_are_long_and_differ() {
        let (a, b) = (random_password().unwrap(), random_password().unwrap());
        assert_eq!(a.len(), PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
    }

    #[test]
    fn paths_with_config_syntax_are_refused() {
        assert!(config_safe(Path::new("/var/backups/mail")).is_ok());
        for bad in ["/a b", "/a%n", "/a:b", "/a\"b", "/a\nb", "/a#b"] {
            assert!(config_safe(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_serves_the_root_as_its_owner_on_the_given_address() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join(".conf");
        for d in ["alice", "bob", ".mailkeep", "Not A User"] {
            fs::create_dir(root.path().join(d)).unwrap();
        }
        let plan_for = |r: &Path| plan(r, &out, "127.0.0.1".parse().unwrap(), 10143);
        if fs::metadata(root.path()).unwrap().uid() == 0 {
            assert!(matches!(plan_for(root.path()), Err(ServeError::RootOwned(_))));
            std::os::unix::fs::chown(root.path(), Some(65534), Some(65534)).unwrap();
        }
        let owner = fs::metadata(root.path()).unwrap().uid();
        let plan = plan_for(root.path());
        let plan = plan.unwrap();
        assert_eq!(plan.users, ["alice", "bob"]);
        let conf = dovecot_conf(&plan);
        let root = plan.root.display();
        assert!(conf.contains(&format!("mail_location = maildir:{root}/%n\n")));
        assert!(conf.contains(&format!("args = uid={owner} gid=")));
        assert!(conf.contains("address = 127.0.0.1\n    port = 10143\n"));
        assert!(conf.ends_with("!include_try local.conf\n"));
    }
}
