//! `mailkeep lmtp`: a long-lived LMTP server on a Unix socket, so that a relay's copy costs
//! Exim one connection instead of a pipe transport's fork and exec of a process per message
//! (issue 24). Each copy is stored by the core's `delivery`, the same bytes and the same
//! fsyncs as `deliver`; a recipient's 250 comes only after them.
//!
//! - Two roles, one per socket: an INBOX socket stores a copy for each recipient (its local
//!   part is the owner, the address is Delivered-To); a Sent socket stores one copy for the
//!   owner MAIL FROM names, its recipients listed in Envelope-To, as `deliver --direction
//!   out --rcpt $pipe_addresses` does. Exim's lmtp transport cannot rewrite a recipient, so
//!   the folder cannot travel in the address; it travels in the socket.
//! - A thread per connection, at most `--max-connections`; more wait in the listen queue
//!   (accepted when a slot is free), as Exim's own limit is usually higher.
//! - A panic while storing is caught: its recipients get 451 (the client retries), the
//!   server goes on. With --dedup the copy's claim is committed if the copy was published
//!   (the retry folds into it), else released (`delivery::Unwinding`): the server's pid
//!   stays alive, so a claim left pending would hold every retry.
//! - SIGTERM or SIGINT: no new connections; a transaction under way finishes (its replies
//!   are sent), then each client gets 421 and the process exits 0.

use std::io::{BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::cli::LmtpArgs;
use crate::commands::Error;
use crate::config::ConfigError;
use crate::dedup::{self, DedupError};
use crate::delivery::{self, DeliverError, Delivery, Done, Head};
use crate::envelope::{EnvelopeError, Sender, User};
use crate::exit::{Classify, Exit};
use crate::lmtp::{self, Command, DataError, Message, ReadError, Reader, Syntax, reply};
use crate::log::{LogTarget, Logger};
use crate::maildir::{FolderKind, MaildirError, Perms};

/// How often a waiting read wakes up to look at the stop flag and the idle clock.
const TICK: Duration = Duration::from_millis(250);
/// Recipients of one transaction (RFC 5321 asks servers to take at least 100).
const RCPTS_MAX: usize = 1000;
/// A kept dedup store prunes a batch of expired keys every this many copies, as often as
/// one-process-per-message deliveries take their turns.
const PRUNE_EVERY: u64 = dedup::PRUNE_EVERY as u64;

#[derive(Debug, thiserror::Error)]
pub enum LmtpError {
    #[error("no socket to listen on: give --listen PATH, or start from a systemd socket unit (LISTEN_FDS)")]
    NoSocket,
    #[error("cannot listen on {}: {err}", path.display())]
    Listen { path: PathBuf, err: std::io::Error },
    #[error("{} exists and is not a socket: refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("{} is in use: another server answers on it", .0.display())]
    InUse(PathBuf),
    #[error("cannot handle signals: {0}")]
    Signals(nix::Error),
    #[error(
        "systemd passed a socket named {0:?} (LISTEN_FDNAMES): give each socket unit FileDescriptorName=inbox or FileDescriptorName=sent"
    )]
    UnknownFdName(String),
}

impl Classify for LmtpError {
    fn exit(&self) -> Exit {
        match self {
            LmtpError::NoSocket | LmtpError::NotASocket(_) | LmtpError::UnknownFdName(_) | LmtpError::InUse(_) => {
                Exit::Usage
            }
            LmtpError::Listen { .. } | LmtpError::Signals(_) => Exit::TempFail,
        }
    }
}

/// Which copies a socket takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Inbox,
    Sent,
}

/// Raised by SIGTERM and SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What every connection shares.
struct Server {
    root: PathBuf,
    accounts: Option<PathBuf>,
    perms: Perms,
    log: LogTarget,
    dedup_window: Option<u32>,
    /// Where the dedup store is (ROOT/.mailkeep or --dedup-store).
    dedup_store: dedup::Location,
    max_size: u64,
    idle: Duration,
    /// Where a message's bytes past `lmtp::SPILL_AT` wait, in an unnamed file: ROOT/.mailkeep.
    spill_dir: PathBuf,
    /// The longest DATA.
    data_limit: Duration,
    name: String,
    /// Open dedup stores, one per connection storing at the moment: a claim may wait for
    /// another connection's commit of the same key, so no store is shared while in use.
    stores: Mutex<Vec<dedup::Store>>,
    copies: AtomicU64,
}

/// `mailkeep lmtp`: listen, serve until SIGTERM, wait for the transactions under way.
pub fn run(args: &LmtpArgs) -> Result<Exit, Error> {
    if nix::unistd::geteuid().is_root() && !args.allow_root {
        return Err(ConfigError::RunningAsRoot.into());
    }
    let perms = Perms { shared_group: args.shared_group };
    perms.apply_umask();
    let listeners = listeners(args)?;
    catch_signals()?;
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let server = Arc::new(Server {
        root: args.root.clone(),
        accounts: args.accounts.clone(),
        perms,
        log: args.log,
        dedup_window: args.dedup.dedup.then_some(args.dedup.dedup_window),
        dedup_store: match args.dedup.dedup {
            true => dedup::Location::new(&args.root, args.dedup.dedup_store.as_deref())?,
            false => dedup::Location::InRoot(args.root.clone()),
        },
        max_size: args.max_size,
        idle: Duration::from_secs(args.idle_timeout.max(1)),
        data_limit: Duration::from_secs(args.data_timeout.max(1)),
        spill_dir: args.root.join(".mailkeep"),
        name: if host.is_empty() { "localhost".into() } else { host },
        stores: Mutex::new(Vec::new()),
        copies: AtomicU64::new(0),
    });
    accept_loop(&server, &listeners, args.max_connections.max(1));
    Ok(Exit::Ok)
}

/// The sockets to serve: systemd's (socket activation), else the ones named.
fn listeners(args: &LmtpArgs) -> Result<Vec<(UnixListener, Role)>, LmtpError> {
    let mut out = systemd_listeners()?;
    for (path, role) in [(&args.listen, Role::Inbox), (&args.listen_sent, Role::Sent)] {
        if let Some(path) = path {
            out.push((bind(path)?, role));
        }
    }
    if out.is_empty() {
        return Err(LmtpError::NoSocket);
    }
    Ok(out)
}

/// The sockets systemd passed, if they are for this process (sd_listen_fds(3)): fd 3 on,
/// each named by LISTEN_FDNAMES, `inbox` or `sent`. Any other name is refused: systemd
/// names a socket without FileDescriptorName= after its unit, and a Sent socket taken for
/// an INBOX one would store each sent message into its recipients' INBOXes.
fn systemd_listeners() -> Result<Vec<(UnixListener, Role)>, LmtpError> {
    let var = |name| std::env::var(name).ok();
    let for_us = var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count: RawFd = var("LISTEN_FDS").and_then(|n| n.parse().ok()).filter(|_| for_us).unwrap_or(0);
    let names = var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    let roles: Vec<Role> = (0..count.clamp(0, 64))
        .map(|_| match names.next() {
            Some("inbox") => Ok(Role::Inbox),
            Some("sent") => Ok(Role::Sent),
            other => Err(LmtpError::UnknownFdName(other.unwrap_or_default().to_string())),
        })
        .collect::<Result<_, _>>()?;
    let fds = (3..).zip(roles);
    // SAFETY: systemd passed fds 3 to 3+LISTEN_FDS-1 to this process (LISTEN_PID is ours)
    // as listening sockets; nothing else in the process owns them.
    Ok(fds.map(|(fd, role)| (unsafe { UnixListener::from_raw_fd(fd) }, role)).collect())
}

/// A socket at `path`: a stale socket file of an earlier run (nobody answers on it) is
/// replaced; a live server's socket or any other file is refused. Mode 0660 from the moment
/// it exists (made under a umask, before any thread starts): the client's user
/// (Debian-exim, postfix) must be in its group.
fn bind(path: &Path) -> Result<UnixListener, LmtpError> {
    use nix::sys::stat::{Mode, umask};
    let listen_err = |err| LmtpError::Listen { path: path.to_path_buf(), err };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(LmtpError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(listen_err)?
        }
        Ok(_) => return Err(LmtpError::NotASocket(path.to_path_buf())),
        Err(_) => {}
    }
    let before = umask(Mode::from_bits_truncate(0o117));
    let bound = UnixListener::bind(path);
    umask(before);
    bound.map_err(listen_err)
}

/// SIGTERM and SIGINT raise `STOP`; without SA_RESTART, so a waiting poll wakes up.
fn catch_signals() -> Result<(), LmtpError> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(SigHandler::Handler(on_stop), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(LmtpError::Signals)?;
    }
    Ok(())
}

/// Accepts connections until `STOP`, a thread for each, then waits for them to end. With
/// `max` served, nothing is accepted: the next clients wait in the listen queue for a slot
/// (a 421 would make Exim defer a copy it could have delivered a moment later).
fn accept_loop(server: &Arc<Server>, listeners: &[(UnixListener, Role)], max: usize) {
    let active = Arc::new((Mutex::new(0usize), Condvar::new()));
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|(l, _)| libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(l), events: libc::POLLIN, revents: 0 })
        .collect();
    while !STOP.load(Ordering::Relaxed) {
        if !wait_for_slot(&active, max) {
            continue;
        }
        // SAFETY: poll on a local array of pollfd whose length is passed with it.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if ready <= 0 {
            continue;
        }
        for (pfd, (listener, role)) in fds.iter_mut().zip(listeners) {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            // Only this loop adds connections: a free slot now is still free at the accept.
            if *active.0.lock().unwrap_or_else(|e| e.into_inner()) >= max {
                break;
            }
            if let Ok((stream, _)) = listener.accept() {
                start_connection(server, &active, stream, *role, max);
            }
        }
    }
    let (count, ended) = &*active;
    let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
    while *n > 0 {
        n = ended.wait(n).unwrap_or_else(|e| e.into_inner());
    }
}

/// True when fewer than `max` connections are served; else waits (a second at most, to
/// look at `STOP` again) for one to end and returns false.
fn wait_for_slot(active: &(Mutex<usize>, Condvar), max: usize) -> bool {
    let n = active.0.lock().unwrap_or_else(|e| e.into_inner());
    if *n < max {
        return true;
    }
    let _ = active.1.wait_timeout(n, Duration::from_secs(1));
    false
}

/// Serves `stream` on a thread of its own (the caller saw a free slot; 421 if not).
fn start_connection(
    server: &Arc<Server>,
    active: &Arc<(Mutex<usize>, Condvar)>,
    stream: UnixStream,
    role: Role,
    max: usize,
) {
    let mut busy = stream;
    {
        let mut n = active.0.lock().unwrap_or_else(|e| e.into_inner());
        if *n >= max {
            let _ = busy.write_all(reply(421, "4.3.2", "too many connections, try again later").as_bytes());
            return;
        }
        *n += 1;
    }
    let (server, done) = (Arc::clone(server), Arc::clone(active));
    let spawned = std::thread::Builder::new().name("lmtp".into()).spawn(move || {
        // A panic outside a store (those are caught and answered 451) only ends this connection.
        let _ = catch_unwind(AssertUnwindSafe(|| serve(&server, busy, role)));
        let mut n = done.0.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        done.1.notify_all();
    });
    if spawned.is_err() {
        let mut n = active.0.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
    }
}

/// One transaction's state.
#[derive(Default)]
struct Transaction {
    /// Set by MAIL FROM: the sender (and for a Sent socket, the owner).
    sender: Option<(Sender, Option<User>)>,
    rcpts: Vec<Vec<u8>>,
}

/// One connection, from the greeting to QUIT, a time-out, a disconnect or the stop.
fn serve(server: &Server, stream: UnixStream, role: Role) {
    let Ok(mut out) = stream.try_clone() else { return };
    let _ = stream.set_read_timeout(Some(TICK));
    let _ = out.set_write_timeout(Some(server.idle));
    let mut reader = Reader::new(BufReader::new(stream), server.idle);
    let logger = Logger::new(server.log);
    let mut send = |text: &str| out.write_all(text.as_bytes()).is_ok();
    if !send(&format!("220 {} LMTP mailkeep ready\r\n", server.name)) {
        return;
    }
    let (mut greeted, mut tx) = (false, Transaction::default());
    loop {
        let line = match reader.command(&STOP) {
            Ok(line) => line,
            Err(e) => {
                if let Some(last) = last_words(&e) {
                    send(&last);
                }
                return;
            }
        };
        let answer = match lmtp::parse(&line) {
            Ok(Command::Lhlo) => {
                greeted = true;
                tx = Transaction::default();
                lmtp::lhlo_reply(&server.name, server.max_size)
            }
            Ok(Command::Smtp) => reply(500, "5.5.1", "this is LMTP: say LHLO"),
            Ok(Command::Quit) => {
                send(&reply(221, "2.0.0", "bye"));
                return;
            }
            Ok(Command::Noop) => reply(250, "2.0.0", "ok"),
            Ok(Command::Vrfy) => reply(252, "2.5.0", "cannot verify, send the message"),
            Ok(Command::Rset) => {
                tx = Transaction::default();
                reply(250, "2.0.0", "ok")
            }
            Ok(_) if !greeted => reply(503, "5.5.1", "say LHLO first"),
            Ok(Command::Mail { path, size }) => mail(server, role, &mut tx, &path, size),
            Ok(Command::Rcpt { path }) => rcpt(role, &mut tx, path),
            Ok(Command::Data) if tx.rcpts.is_empty() => reply(503, "5.5.1", "no valid recipients"),
            Ok(Command::Data) => {
                if !send("354 send the message, end with a line of a single dot\r\n") {
                    return;
                }
                // Cut off mid-message: nothing was stored, the client will retry.
                match data(server, role, &std::mem::take(&mut tx), &mut reader, &logger) {
                    Ok(replies) => replies,
                    Err(e) => {
                        if let Some(last) = last_words(&e) {
                            send(&last);
                        }
                        return;
                    }
                }
            }
            Err(Syntax::BadPath) => reply(501, "5.5.4", "bad address: want <address>"),
            Err(Syntax::Unknown) => reply(500, "5.5.2", "unknown command"),
        };
        if !send(&answer) {
            return;
        }
    }
}

/// What a client is told when its connection ends without QUIT, if anything.
fn last_words(e: &ReadError) -> Option<String> {
    match e {
        ReadError::Stopping => Some(reply(421, "4.3.2", "shutting down, try again later")),
        ReadError::Idle => Some(reply(421, "4.4.2", "idle too long, closing")),
        ReadError::TooLong => Some(reply(500, "5.5.2", "line too long, closing")),
        ReadError::TooSlow => Some(reply(421, "4.4.2", "the message took too long to send, closing")),
        ReadError::Closed | ReadError::Io(_) => None,
    }
}

/// DATA: the message, then the copies and one reply per recipient (joined); an error when
/// the client went away or took too long before the final dot.
fn data<R: std::io::BufRead>(
    server: &Server,
    role: Role,
    tx: &Transaction,
    reader: &mut Reader<R>,
    logger: &Logger,
) -> Result<String, ReadError> {
    let deadline = std::time::Instant::now() + server.data_limit;
    let replies = match reader.data(server.max_size, deadline, Some(&server.spill_dir)) {
        Ok(message) => store(server, role, tx, &message, logger),
        Err(DataError::TooBig) => {
            let too_big = format!("message over {} bytes", server.max_size);
            tx.rcpts.iter().map(|_| reply(552, "5.3.4", &too_big)).collect()
        }
        Err(DataError::Spill(e)) => {
            let why = format!("cannot keep the message in {}: {e}", server.spill_dir.display());
            let code = if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) { 452 } else { 451 };
            tx.rcpts.iter().map(|_| reply(code, "4.3.1", &why)).collect()
        }
        Err(DataError::Read(e)) => return Err(e),
    };
    Ok(replies.concat())
}

/// MAIL FROM: a transaction starts. On a Sent socket the sender's local part is the owner.
fn mail(server: &Server, role: Role, tx: &mut Transaction, path: &[u8], size: Option<u64>) -> String {
    if tx.sender.is_some() {
        return reply(503, "5.5.1", "nested MAIL command");
    }
    if size.is_some_and(|s| s > server.max_size) {
        return reply(552, "5.3.4", &format!("message over {} bytes", server.max_size));
    }
    let sender = Sender::from_bytes(path);
    let owner = match role {
        Role::Inbox => None,
        Role::Sent => match sender.address().map(|a| User::parse(os(lmtp::local_part(a)))) {
            Some(Ok(user)) => Some(user),
            Some(Err(e)) => return reply(550, "5.1.7", &e.to_string()),
            None => return reply(550, "5.1.7", "a Sent copy needs a sender: <> owns no mailbox"),
        },
    };
    tx.sender = Some((sender, owner));
    reply(250, "2.1.0", "sender ok")
}

/// RCPT TO: on an INBOX socket the local part must be a safe user name.
fn rcpt(role: Role, tx: &mut Transaction, path: Vec<u8>) -> String {
    if tx.sender.is_none() {
        return reply(503, "5.5.1", "need MAIL before RCPT");
    }
    if tx.rcpts.len() >= RCPTS_MAX {
        return reply(452, "4.5.3", "too many recipients, send the rest again");
    }
    if role == Role::Inbox
        && let Err(e) = User::parse(os(lmtp::local_part(&path)))
    {
        return reply(550, "5.1.3", &e.to_string());
    }
    tx.rcpts.push(path);
    reply(250, "2.1.5", "recipient ok")
}

fn os(bytes: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(bytes)
}

/// After DATA: the copies, and one reply per recipient, in their order.
fn store(server: &Server, role: Role, tx: &Transaction, message: &Message, logger: &Logger) -> Vec<String> {
    let Some((sender, owner)) = &tx.sender else { return vec![] };
    let stored = catch_unwind(AssertUnwindSafe(|| match (role, owner) {
        (Role::Sent, Some(owner)) => {
            let answer = copy(server, owner, FolderKind::Sent, sender, &tx.rcpts, message, logger);
            tx.rcpts.iter().map(|_| answer.clone()).collect()
        }
        _ => tx
            .rcpts
            .iter()
            .map(|rcpt| match User::parse(os(lmtp::local_part(rcpt))) {
                Ok(user) => copy(server, &user, FolderKind::Inbox, sender, std::slice::from_ref(rcpt), message, logger),
                Err(e) => reply(550, "5.1.3", &e.to_string()),
            })
            .collect(),
    }));
    stored.unwrap_or_else(|_| tx.rcpts.iter().map(|_| reply(451, "4.3.0", "internal error (bug), try again")).collect())
}

/// One copy for `user`'s `folder`, and the reply it earns.
fn copy(
    server: &Server,
    user: &User,
    folder: FolderKind,
    sender: &Sender,
    rcpts: &[Vec<u8>],
    message: &Message,
    logger: &Logger,
) -> String {
    if let Some(accounts) = &server.accounts
        && let Err(e) = user.check_listed(accounts)
    {
        return failure(&e);
    }
    let d = Delivery {
        root: &server.root,
        user,
        perms: server.perms,
        folder,
        sender: Some(sender),
        rcpts,
        dedup_window: server.dedup_window,
        dedup_store: &server.dedup_store,
        // With --dedup `with_store` always passes an open store: Delivery never opens one.
        root_id: "",
    };
    let (head, front) = Head::in_memory(&message.front, message.spilled());
    let spilled: Box<dyn std::io::Read + '_> = match message.rest() {
        Ok(Some(file)) => Box::new(file),
        Ok(None) => Box::new(std::io::empty()),
        Err(e) => return reply(451, "4.3.0", &format!("cannot read the message back: {e}")),
    };
    let mut rest = std::io::Read::chain(front, spilled);
    let result = with_store(server, |store| delivery::deliver_logged(&d, head, &mut rest, store, logger));
    match result {
        Ok(Done::Stored { file, .. }) => reply(250, "2.0.0", &format!("{user} {} stored as {file}", folder.name())),
        Ok(Done::Duplicate { of }) => reply(250, "2.0.0", &format!("{user} {} already stored as {of}", folder.name())),
        Err(e) => failure(&e),
    }
}

/// Runs `f` with a dedup store of the pool (opened if none is free) when --dedup is on.
fn with_store(
    server: &Server,
    f: impl FnOnce(Option<&dedup::Store>) -> Result<Done, DeliverError>,
) -> Result<Done, DeliverError> {
    let Some(window) = server.dedup_window else { return f(None) };
    let pooled = server.stores.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let store = match pooled {
        Some(store) => store,
        // The store serves the root whose marker is there now (read per store opened).
        None => dedup::Store::open(&server.dedup_store, window, &crate::root::require(&server.root)?.id)?.kept(),
    };
    let result = f(Some(&store));
    // The store's own pruning is per process id (one process per message); a kept one
    // prunes a bounded batch on a count of copies instead.
    if server.copies.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
        let _ = store.prune_batch();
    }
    server.stores.lock().unwrap_or_else(|e| e.into_inner()).push(store);
    result
}

/// The reply for a copy that was not stored, by its exit class as `deliver` would end:
/// 67 is 550, 65 is 554, a full disk 452, everything else (temporary, unknown, a symlink
/// planted below the root, which deliver exits 75 for) 451, so the client keeps the
/// message and retries.
fn failure(e: &(impl Classify + std::fmt::Display + AsFull)) -> String {
    match e.exit() {
        Exit::NoUser => reply(550, "5.1.1", &e.to_string()),
        Exit::DataErr => reply(554, "5.6.0", &e.to_string()),
        _ if e.is_full() => reply(452, "4.3.1", &e.to_string()),
        _ => reply(451, "4.3.0", &e.to_string()),
    }
}

/// Whether an error is a full disk or an exhausted quota.
trait AsFull {
    fn is_full(&self) -> bool;
}

impl AsFull for EnvelopeError {
    fn is_full(&self) -> bool {
        false
    }
}

impl AsFull for DeliverError {
    fn is_full(&self) -> bool {
        let errno = match self {
            DeliverError::Maildir(MaildirError::Io { err, .. }) => err.raw_os_error(),
            DeliverError::Dedup(DedupError::Sqlite { err, .. }) => {
                return matches!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
            }
            _ => None,
        };
        matches!(errno, Some(libc::ENOSPC | libc::EDQUOT))
    }
}
