//! `mailkeep serve-config dovecot`: the day the provider is gone, one command gives a
//! ready Dovecot configuration that serves every user's backup over IMAP.
//!
//! It writes, into `--out`: `dovecot.conf` (standalone, nothing of /etc/dovecot is read;
//! ends with `!include_try local.conf` for the admin's TLS and other overrides, which it
//! never writes) and `passwd` (Dovecot passwd-file, one `{SSHA512}` hash per user). Each
//! user gets a fresh random password from /dev/urandom, printed once on stdout. The hash is
//! computed here (salted SHA-512, which Dovecot reads natively) so that nothing depends on
//! an outside tool; the passwords are 100 random bits, so one salted round is enough.
//! It runs as root: OUT and both files are written through a descriptor of OUT, never by
//! path (`fsutil`), so whoever can write into OUT cannot make it write anywhere else.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    #[error("--out {} is a symbolic link: give the directory itself (as root, serve-config follows no link at OUT)", .0.display())]
    OutSymlink(PathBuf),
    #[error("cannot write {}: {err}", path.display())]
    Write { path: PathBuf, err: io::Error },
    #[error("cannot read random bytes from /dev/urandom: {0}")]
    Random(io::Error),
}

impl crate::exit::Classify for ServeError {
    /// What the admin must fix is configuration; I/O may work on the next try.
    fn exit(&self) -> Exit {
        match self {
            ServeError::RootOwned(_)
            | ServeError::NoUsers(_)
            | ServeError::UnsafePath { .. }
            | ServeError::OutTooLong(_)
            | ServeError::OutSymlink(_) => Exit::Config,
            // A root that is not there is the admin's to fix; anything else may pass.
            ServeError::Root { err, .. }
                if matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) =>
            {
                Exit::Config
            }
            ServeError::Root { .. } | ServeError::Write { .. } | ServeError::Random(_) => Exit::TempFail,
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

/// Opens OUT, making it (0755) when missing; a symlink at OUT is refused.
fn open_out(out: &Path) -> Result<OwnedFd, ServeError> {
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
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).map_err(ServeError::Random)?;
    Ok(buf)
}

/// 20 characters of a 32-character alphabet: 100 random bits.
fn random_password() -> Result<String, ServeError> {
    let bytes = random_bytes::<PASSWORD_LEN>()?;
    Ok(bytes.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])).collect())
}

/// Dovecot's `{SSHA512}`: base64 of SHA-512(password + salt) followed by the salt.
pub fn ssha512(password: &[u8], salt: &[u8]) -> String {
    let mut data = password.to_vec();
    data.extend_from_slice(salt);
    let mut raw = sha512(&data).to_vec();
    raw.extend_from_slice(salt);
    format!("{{SSHA512}}{}", base64(&raw))
}

pub fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SHA-512 (FIPS 180-4), for the password hashes only.
pub fn sha512(data: &[u8]) -> [u8; 64] {
    let mut h: [u64; 8] = [
        0x6a09e667f3bcc908,
        0xbb67ae8584caa73b,
        0x3c6ef372fe94f82b,
        0xa54ff53a5f1d36f1,
        0x510e527fade682d1,
        0x9b05688c2b3e6c1f,
        0x1f83d9abfb41bd6b,
        0x5be0cd19137e2179,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 128 != 112 {
        msg.push(0);
    }
    msg.extend_from_slice(&(data.len() as u128 * 8).to_be_bytes());
    for block in msg.chunks(128) {
        let mut w = [0u64; 80];
        for (i, word) in block.chunks(8).enumerate() {
            w[i] = u64::from_be_bytes(word.try_into().expect("8 bytes"));
        }
        for i in 16..80 {
            let s0 = w[i - 15].rotate_right(1) ^ w[i - 15].rotate_right(8) ^ (w[i - 15] >> 7);
            let s1 = w[i - 2].rotate_right(19) ^ w[i - 2].rotate_right(61) ^ (w[i - 2] >> 6);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..80 {
            let [a, b, c, d, e, f, g, hh] = v;
            let s1 = e.rotate_right(14) ^ e.rotate_right(18) ^ e.rotate_right(41);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(28) ^ a.rotate_right(34) ^ a.rotate_right(39);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            v = [t1.wrapping_add(s0.wrapping_add(maj)), a, b, c, d.wrapping_add(t1), e, f, g];
        }
        for (x, y) in h.iter_mut().zip(v) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 64];
    for (chunk, x) in out.chunks_mut(8).zip(h) {
        chunk.copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[rustfmt::skip]
const K: [u64; 80] = [
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha512_matches_fips_vectors() {
        assert_eq!(
            hex(&sha512(b"abc")),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert!(hex(&sha512(b"")).starts_with("cf83e1357eefb8bdf1542850d66d8007"));
        let two_blocks = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno\
                           ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
        assert!(hex(&sha512(two_blocks)).starts_with("8e959b75dae313da8cf4f72814fc143f"));
    }

    #[test]
    fn base64_pads_like_rfc4648() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg==")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn ssha512_is_hash_then_salt() {
        let h = ssha512(b"secret", b"salt");
        assert!(h.starts_with("{SSHA512}"));
        assert_eq!(h.len(), "{SSHA512}".len() + 92); // 68 bytes in base64
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
