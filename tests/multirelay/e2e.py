#!/usr/bin/python3
"""Two relays, two backup roots, one IMAP server (issue 24): the set-up where each MX host
keeps its own backup and a serving host merges them with Dovecot's dsync.

Two real Exim daemons (the shipped exim4.conf.example, only paths, ports, hosts and
primary_hostname substituted), each in a UTS namespace of its own with its own host name,
relay-a and relay-b, so that Exim's Received line and mailkeep's file names carry it, each
storing into its own root. One fake provider (tests/exim/sink.py) behind both. Messages go
through one relay, or the same message through both (a sender that retried at the second
MX, the provider's outbound mail split over two gateways), inbound and outbound. Then, as a
serving host would: copies of both roots (cp -a, as rsync would make them), one merged root
made with `mailkeep init` and served by the config `mailkeep serve-config dovecot` writes,
and per user `doveadm sync -1 -R` from each copy. Checked through imaplib: every stored
copy is there once per relay that stored it (byte for byte, at its INTERNALDATE); a second
merge adds nothing; a merge after a new copy adds exactly it; `mailkeep check` after
`--repair` is clean. Everything it starts it stops by pid.

usage: e2e.py WORK MAILKEEP      (run by run-e2e.sh, as root)
Prints one line per check and, last, "N passed, M failed"; exit status 1 on any failure.
"""
import collections
import imaplib
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "imap"))
import servers    # noqa: E402  (Dovecot started and stopped by pid)
import checks     # noqa: E402
from checks import ok  # noqa: E402

WORK, MAILKEEP = sys.argv[1:3]
EXIM = "/usr/sbin/exim4"
PY = "/usr/bin/python3"
TRUSTED = "/etc/exim4/trusted_configs"
SNIP = os.path.join(REPO, "exim-snippets")
PIPE_USER = "mailbackup"
AS_PIPE = ["setpriv", f"--reuid={PIPE_USER}", f"--regid={PIPE_USER}", "--init-groups"]
DOMAIN = "example.com"
EXT = "ext@example.net"
PROVIDER_IP, OUTSIDE_IP = "127.0.0.2", "127.0.0.3"
RELAYS = ["relay-a", "relay-b"]
# Self-test, proves the test can fail (the run must then FAIL): "backup" merges with
# `doveadm backup -R`, which makes each user's mailbox a mirror of the last copy merged.
SABOTAGE = os.environ.get("HARNESS_SABOTAGE", "")

STARTED = []   # (name, pid) of daemons to stop
TRUSTED_ADDED = []
TRUSTED_CREATED = []   # [True] when this run created the file (then it removes it, empty)


def run(cmd, as_pipe=False, **kw):
    return subprocess.run((AS_PIPE if as_pipe else []) + cmd, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------- the two relays
def exim_config(relay, port, sink_port):
    """exim4.conf.example with only paths, ports, hosts and primary_hostname substituted:
    each substituted line exists exactly once, and no other line differs (as in
    tests/exim/run-e2e.sh)."""
    d = os.path.join(WORK, relay)
    subst = {
        "MAILKEEP_ROOT": os.path.join(d, "root"),
        "MAILKEEP_ACCOUNTS": os.path.join(WORK, "etc", "accounts"),
        "MAILKEEP_PROVIDER_RELAYS": os.path.join(WORK, "etc", "provider-relays"),
        "MAILKEEP_PROVIDER_MX": f"{PROVIDER_IP}::{sink_port}",
        "MAILKEEP_BIN": os.path.join(WORK, "bin", "mailkeep"),
        "MAILKEEP_SMARTHOST": f"{PROVIDER_IP}::{sink_port}",
        "primary_hostname": f"{relay}.{DOMAIN}",
        "local_interfaces": "<; 127.0.0.1",
        "daemon_smtp_ports": str(port),
        "spool_directory": os.path.join(d, "spool"),
        "log_file_path": os.path.join(d, "log", "%slog"),
    }
    shipped = open(os.path.join(SNIP, "exim4.conf.example")).read()
    text = shipped
    for name, value in subst.items():
        pat = re.compile(r"^(# *)?" + re.escape(name) + r" *=.*$", re.M)
        found = len(pat.findall(text))
        if not ok(found == 1, f"{relay}: one '{name} =' line in exim4.conf.example", f"found {found}"):
            return None
        text = pat.sub(lambda m: f"{name} = {value}", text, count=1)
    changed = sum(a != b for a, b in zip(shipped.splitlines(), text.splitlines()))
    ok(changed == len(subst), f"{relay}: config = exim4.conf.example with {len(subst)} lines substituted",
       f"{changed} lines differ")
    conf = os.path.join(d, "exim.conf")
    with open(conf, "w") as f:
        f.write(text)
    os.chmod(conf, 0o644)   # root-owned, not writable by others: a trusted -C file
    return conf


def trust(conf):
    if not os.path.exists(TRUSTED):
        TRUSTED_CREATED.append(True)
    with open(TRUSTED, "a") as f:
        f.write(conf + "\n")
    os.chmod(TRUSTED, 0o644)
    TRUSTED_ADDED.append(conf)


def untrust():
    if not TRUSTED_ADDED or not os.path.exists(TRUSTED):
        return
    lines = [l for l in open(TRUSTED).read().splitlines() if l not in TRUSTED_ADDED]
    if lines or not TRUSTED_CREATED:
        with open(TRUSTED, "w") as f:
            f.write("".join(l + "\n" for l in lines))
    else:
        os.unlink(TRUSTED)
    TRUSTED_ADDED.clear()


def start_exim(relay, conf, port):
    """The daemon in a UTS namespace of its own, named `relay`: its deliveries, and so
    mailkeep's gethostname(), see that name, as on a separate machine."""
    pidfile = os.path.join(WORK, relay, "exim.pid")
    r = run(["unshare", "--uts", "--", "/bin/sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", relay,
             EXIM, "-C", conf, "-bd", "-oX", str(port), "-oP", pidfile])
    if not ok(r.returncode == 0, f"{relay}: exim -bd started in its own UTS namespace", r.stderr):
        return False
    for _ in range(100):
        if os.path.exists(pidfile) and os.path.getsize(pidfile) and servers.listeners(port):
            pid = int(open(pidfile).read())
            STARTED.append((f"exim {relay}", pid))
            uts = os.readlink(f"/proc/{pid}/ns/uts") != os.readlink("/proc/self/ns/uts")
            return ok(uts, f"{relay}: exim daemon {pid} listens on 127.0.0.1:{port}, in a UTS namespace of its own")
        time.sleep(0.1)
    return ok(False, f"{relay}: exim daemon came up", open(os.path.join(WORK, relay, "log", "mainlog")).read()
              if os.path.exists(os.path.join(WORK, relay, "log", "mainlog")) else "no mainlog")


def stop_pid(name, pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not servers.alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    print(f"  ({name} {pid} needed SIGKILL)")


def message(key, frm, to):
    return (f"From: {frm}\nTo: {to}\nSubject: multirelay {key}\n"
            f"Date: Thu, 01 Jan 2026 12:00:00 +0000\nMessage-ID: <mr-{key}@client.test>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
            f"Body of {key}.\nFrom here on, a line like an mbox separator.\n.a dot line\n").encode()


def send(relay, port, key, bind, mail_from, rcpts, to_header):
    f = os.path.join(WORK, "msgs", f"{key}.{relay}.eml")
    with open(f, "wb") as out:
        out.write(message(key, mail_from, to_header))
    r = run([PY, os.path.join(REPO, "tests", "exim", "send.py"), "--bind", bind, "--server", f"127.0.0.1:{port}",
             "--from", mail_from, "--rcpt", ",".join(rcpts), "--data", f])
    qid = r.stdout.strip().removeprefix("QUEUEID ") if r.returncode == 0 else None
    ok(qid is not None, f"{relay}: {key} accepted ({qid})", r.stdout + r.stderr)
    return qid


def wait_completed(relay, qids, timeout=30):
    log = os.path.join(WORK, relay, "log", "mainlog")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = open(log).read() if os.path.exists(log) else ""
        if all(re.search(rf"^.{{19}} {re.escape(q)} Completed", text, re.M) for q in qids):
            return ok(True, f"{relay}: all {len(qids)} messages completed (relayed and copied)")
        time.sleep(0.1)
    return ok(False, f"{relay}: all {len(qids)} messages completed", text[-3000:])


# ---------------------------------------------------------------- what is stored
def stored(root):
    """{(user, folder): [(message-id, bytes, mtime), ...]} of a backup root: INBOX and
    Maildir++ folders, new/ and cur/."""
    out = collections.defaultdict(list)
    for user in sorted(os.listdir(root)):
        udir = os.path.join(root, user)
        if user.startswith(".") or not os.path.isdir(udir):
            continue
        folders = [("INBOX", udir)] + [(f[1:], os.path.join(udir, f)) for f in sorted(os.listdir(udir))
                                        if f.startswith(".") and os.path.isdir(os.path.join(udir, f, "cur"))]
        for folder, fdir in folders:
            for sub in ("new", "cur"):
                d = os.path.join(fdir, sub)
                for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                    p = os.path.join(d, name)
                    data = open(p, "rb").read()
                    out[(user, folder)].append((msgid(data), data, int(os.stat(p).st_mtime), name))
    return out


def msgid(data):
    m = re.search(rb"^Message-ID: *<([^>]*)>", data, re.M | re.I)
    return m.group(1).decode() if m else None


def ids(entries):
    return sorted(e[0] for e in entries)


# ---------------------------------------------------------------- the merge
def merge(conf, users, copies):
    """`doveadm sync -1 -R`: one way, from each relay's copy into the served user, nothing
    deleted on either side (`backup` would delete what the copy lacks: the other relay's
    messages). INDEX=MEMORY keeps Dovecot's index files out of the copies."""
    for user in users:
        for copy in copies:
            src = os.path.join(copy, user)
            if not os.path.isdir(src):
                continue
            how = ["backup", "-R"] if SABOTAGE == "backup" else ["sync", "-1", "-R"]
            r = run(["doveadm", "-c", conf, *how, "-u", user, f"maildir:{src}:INDEX=MEMORY"])
            ok(r.returncode == 0, f"doveadm {' '.join(how)} -u {user} from {os.path.basename(copy)}", r.stdout + r.stderr)


def imap_view(port, user, password, folders):
    """{(user, folder): [(message-id, bytes as LF, internaldate)]} through IMAP."""
    out = {}
    m = imaplib.IMAP4("127.0.0.1", port)
    try:
        m.login(user, password)
        for folder in folders:
            typ, count = m.select(f'"{folder}"', readonly=True)
            entries = []
            if typ == "OK" and int(count[0]) > 0:
                typ, data = m.fetch("1:*", "(INTERNALDATE RFC822.SIZE BODY.PEEK[])")
                for item in data if typ == "OK" else []:
                    if not isinstance(item, tuple):
                        continue
                    when = imaplib.Internaldate2tuple(item[0])
                    size = int(re.search(rb"RFC822\.SIZE (\d+)", item[0]).group(1))
                    body = item[1].replace(b"\r\n", b"\n")
                    # RFC822.SIZE is the size with CRLF line ends, as sent; on a mismatch the
                    # served body is marked so that it differs from the stored one.
                    if size != len(item[1]):
                        body = b"RFC822.SIZE %d, but %d bytes sent\n" % (size, len(item[1])) + body
                    entries.append((msgid(body), body, int(time.mktime(when))))
            out[(user, folder)] = entries
    finally:
        try:
            m.logout()
        except Exception:
            pass
    return out


def compare(got, want, what):
    """Every stored copy (bytes, mtime) is served exactly as often as it is stored."""
    for key in sorted(set(want) | set(got)):
        if not want.get(key) and not got.get(key):
            continue   # a folder neither relay has for this user
        w = collections.Counter((e[1], e[2]) for e in want.get(key, []))
        g = collections.Counter((e[1], e[2]) for e in got.get(key, []))
        missing, extra = w - g, g - w
        ok(not missing and not extra,
           f"{what} {key[0]}/{key[1]}: {sum(w.values())} copies, each served byte for byte (and its size) at its mtime "
           f"(Message-IDs {ids(want.get(key, []))})",
           f"missing {[msgid(b) for b, _ in missing]}, unexpected {[msgid(b) for b, _ in extra]}")


# ---------------------------------------------------------------- two namespaces
NAMESPACE = """\
# relay-b's backup as a second namespace beside relay-a's (tests/multirelay/e2e.py)
namespace inbox {{
  separator = /
}}
namespace relay_b {{
  prefix = relay-b/
  separator = /
  location = maildir:{root}/%n:INDEX={state}/%n:CONTROL={state}/%n
  list = yes
  subscriptions = no
}}
"""


def two_namespaces(copies, users):
    """The other way: no merge. serve-config serves relay-a's root; `local.conf` adds
    relay-b's as a namespace `relay-b/` (its INBOX is the mailbox `relay-b`, its Sent
    `relay-b/Sent`), Dovecot's index and control files kept apart from it. A user only
    relay-b has mail for needs a directory in relay-a's root, or serve-config does not
    know them."""
    first, second = copies
    for user in users:
        run(["install", "-d", "-o", PIPE_USER, "-g", PIPE_USER, "-m", "0700", os.path.join(first, user)], check=True)
    port = servers.free_port()
    out_dir = os.path.join(WORK, "serve", "dovecot-ns")
    r = run([MAILKEEP, "serve-config", "dovecot", "--root", first, "--out", out_dir, "--listen", "127.0.0.1",
             "--port", str(port)])
    ok(r.returncode == 0, "two namespaces: serve-config dovecot for relay-a's root", r.stderr)
    passwords = dict(l.split("\t") for l in r.stdout.splitlines() if l and not l.startswith("#"))
    state = os.path.join(WORK, "serve", "relay-b-state")
    run(["install", "-d", "-o", PIPE_USER, "-g", PIPE_USER, "-m", "0700", state], check=True)
    with open(os.path.join(out_dir, "local.conf"), "w") as f:
        f.write(NAMESPACE.format(root=second, state=state))
    want = collections.defaultdict(list)
    for (user, folder), entries in stored(first).items():
        want[(user, folder)] += entries
    for (user, folder), entries in stored(second).items():
        want[(user, "relay-b" if folder == "INBOX" else f"relay-b/{folder}")] += entries
    dov = servers.Dovecot(os.path.join(out_dir, "dovecot.conf"), port)
    try:
        dov.start()
        STARTED.append(("dovecot", dov.pid))
        folders = ["INBOX", "Sent", "relay-b", "relay-b/Sent"]
        got = {k: v for u in users for k, v in imap_view(port, u, passwords.get(u, "-"), folders).items()}
        compare(got, want, "two namespaces")
    except Exception:
        ok(False, "two namespaces: dovecot run", traceback.format_exc())
    finally:
        left = dov.stop()
        ok(not left, "two namespaces: dovecot stopped, nothing of it left", left)
        STARTED[:] = [s for s in STARTED if s[0] != "dovecot"]
    r = run([MAILKEEP, "check", "--root", second], as_pipe=True)
    ok(r.returncode == 0, "two namespaces: relay-b's root, served, is still clean for mailkeep check",
       r.stdout + r.stderr)


# ---------------------------------------------------------------- main
def main_test():
    os.makedirs(os.path.join(WORK, "etc"))
    os.makedirs(os.path.join(WORK, "msgs"))
    with open(os.path.join(WORK, "etc", "accounts"), "w") as f:
        f.write(open(os.path.join(SNIP, "accounts.example")).read())
    with open(os.path.join(WORK, "etc", "provider-relays"), "w") as f:
        f.write(open(os.path.join(SNIP, "provider-relays")).read() + f"\n# test only: the fake provider\n{PROVIDER_IP}\n")
    for f in os.listdir(os.path.join(WORK, "etc")):
        os.chmod(os.path.join(WORK, "etc", f), 0o644)

    sink_port = servers.free_port()
    sink_dir = os.path.join(WORK, "sink")
    sink = subprocess.Popen([PY, os.path.join(REPO, "tests", "exim", "sink.py"), PROVIDER_IP, str(sink_port), sink_dir,
                             os.path.join(WORK, "sink.pid")],
                            stdout=open(os.path.join(WORK, "sink.out"), "w"), stderr=subprocess.STDOUT)
    STARTED.append(("sink", sink.pid))
    ports = {}
    for relay in RELAYS:
        d = os.path.join(WORK, relay)
        for sub in ("spool", "log", "root"):
            os.makedirs(os.path.join(d, sub))
        for sub in ("spool", "log"):
            run(["chown", "Debian-exim:Debian-exim", os.path.join(d, sub)])
        run(["chown", f"{PIPE_USER}:", os.path.join(d, "root")])
        os.chmod(os.path.join(d, "root"), 0o750)
        os.chmod(d, 0o755)
        r = run([MAILKEEP, "init", "--root", os.path.join(d, "root")], as_pipe=True)
        ok(r.returncode == 0, f"{relay}: mailkeep init of its own root", r.stderr)
        ports[relay] = servers.free_port()
        conf = exim_config(relay, ports[relay], sink_port)
        if conf is None:
            return
        trust(conf)
        out = run([EXIM, "-C", conf, "-bV"])
        ok(out.returncode == 0 and not out.stderr, f"{relay}: exim -bV of its config", out.stderr)
        if not start_exim(relay, conf, ports[relay]):
            return

    # What goes through which relay: the same message through both (a sender that retried
    # at the second MX after a lost reply; the provider's outbound mail over two gateways),
    # and each relay's own. carol gets mail through relay-b only.
    ours = lambda u: f"{u}@{DOMAIN}"   # noqa: E731
    plan = [
        ("in-both", ["relay-a", "relay-b"], OUTSIDE_IP, EXT, [ours("alice"), ours("bob")]),
        ("in-a1", ["relay-a"], OUTSIDE_IP, EXT, [ours("alice")]),
        ("in-a2", ["relay-a"], OUTSIDE_IP, EXT, [ours("alice"), ours("bob")]),
        ("in-b1", ["relay-b"], OUTSIDE_IP, EXT, [ours("alice")]),
        ("in-b2", ["relay-b"], OUTSIDE_IP, EXT, [ours("carol")]),
        ("out-both", ["relay-a", "relay-b"], PROVIDER_IP, ours("alice"), [EXT]),
        ("out-a", ["relay-a"], PROVIDER_IP, ours("alice"), [EXT]),
        ("out-b", ["relay-b"], PROVIDER_IP, ours("bob"), [EXT]),
    ]
    qids = collections.defaultdict(list)
    for key, via, bind, frm, rcpts in plan:
        for relay in via:
            q = send(relay, ports[relay], key, bind, frm, rcpts, ", ".join(rcpts))
            if q:
                qids[relay].append(q)
    for relay in RELAYS:
        wait_completed(relay, qids[relay])

    # Each relay's root: its own copies, its host name in every file name, check clean.
    roots = {relay: os.path.join(WORK, relay, "root") for relay in RELAYS}
    want_ids = {
        "relay-a": {("alice", "INBOX"): ["in-a1", "in-a2", "in-both"], ("bob", "INBOX"): ["in-a2", "in-both"],
                    ("alice", "Sent"): ["out-a", "out-both"]},
        "relay-b": {("alice", "INBOX"): ["in-b1", "in-both"], ("bob", "INBOX"): ["in-both"],
                    ("carol", "INBOX"): ["in-b2"], ("alice", "Sent"): ["out-both"], ("bob", "Sent"): ["out-b"]},
    }
    per_relay = {}
    for relay, root in roots.items():
        got = stored(root)
        per_relay[relay] = got
        got_ids = {k: sorted(i.removeprefix("mr-").removesuffix("@client.test") for i in ids(v)) for k, v in got.items()}
        ok(got_ids == want_ids[relay], f"{relay}: its root holds exactly its own copies", f"got {got_ids}")
        names = [e[3] for v in got.values() for e in v]
        ok(all(re.search(rf"\.{relay},S=\d+$", n) for n in names),
           f"{relay}: every file name carries the host name {relay}", names)
        received = all(f"{relay}.{DOMAIN}".encode() in e[1] for v in got.values() for e in v)
        ok(received, f"{relay}: every copy has {relay}'s Received line (primary_hostname)")
        r = run([MAILKEEP, "check", "--root", root], as_pipe=True)
        ok(r.returncode == 0, f"{relay}: mailkeep check of its root is clean", r.stdout + r.stderr)
    for name, pid in [s for s in STARTED if s[0].startswith("exim ")]:
        stop_pid(name, pid)
    STARTED[:] = [s for s in STARTED if not s[0].startswith("exim ")]

    # The serving host: copies of both roots, one merged root, Dovecot, dsync.
    serve = os.path.join(WORK, "serve")
    os.makedirs(serve)
    copies = []
    for relay, root in roots.items():
        copy = os.path.join(serve, f"from-{relay}")
        run(["cp", "-a", root, copy], check=True)
        copies.append(copy)
    merged = os.path.join(serve, "merged")
    os.makedirs(merged)
    run(["chown", f"{PIPE_USER}:", merged])
    os.chmod(merged, 0o750)
    r = run([MAILKEEP, "init", "--root", merged], as_pipe=True)
    ok(r.returncode == 0, "serving host: mailkeep init of the merged root", r.stderr)
    users = sorted({u for got in per_relay.values() for (u, _) in got})
    for user in users:   # serve-config serves the users it finds: one directory each
        run(["install", "-d", "-o", PIPE_USER, "-g", PIPE_USER, "-m", "0700", os.path.join(merged, user)], check=True)
    port = servers.free_port()
    out_dir = os.path.join(serve, "dovecot")
    r = run([MAILKEEP, "serve-config", "dovecot", "--root", merged, "--out", out_dir, "--listen", "127.0.0.1",
             "--port", str(port)])
    ok(r.returncode == 0, "mailkeep serve-config dovecot for the merged root", r.stderr)
    passwords = dict(l.split("\t") for l in r.stdout.splitlines() if l and not l.startswith("#"))
    ok(sorted(passwords) == users, f"a password for each user of both relays {users}", r.stdout)
    conf = os.path.join(out_dir, "dovecot.conf")
    dov = servers.Dovecot(conf, port)
    try:
        dov.start()
        STARTED.append(("dovecot", dov.pid))
        merge(conf, users, copies)

        want = collections.defaultdict(list)
        for got in per_relay.values():
            for key, entries in got.items():
                want[key] += entries
        folders = ["INBOX", "Sent"]
        view = lambda: {k: v for u in users for k, v in imap_view(port, u, passwords[u], folders).items()}  # noqa: E731
        compare(view(), want, "merged")
        both = sum(1 for entries in want.values() for n in collections.Counter(ids(entries)).values() if n == 2)
        print(f"  note: dsync keeps both copies of a message that passed both relays: {both} messages are there"
              " twice (the copies differ in their Received line; Dovecot's GUID of each is its file's base name)")
        r = run(["doveadm", "-c", conf, "deduplicate", "-u", "alice", "mailbox", "INBOX", "all"])
        after = imap_view(port, "alice", passwords["alice"], ["INBOX"])[("alice", "INBOX")]
        ok(r.returncode == 0 and len(after) == len(want[("alice", "INBOX")]),
           f"doveadm deduplicate (by GUID) keeps both copies: {len(after)} in alice's INBOX", r.stderr)

        merge(conf, users, copies)
        compare(view(), want, "merged twice (idempotent)")

        # A copy stored by relay-a after the first merge: the next merge adds it, only it.
        late = message("late", EXT, ours("bob"))
        r = run([MAILKEEP, "deliver", "--root", roots["relay-a"], "--user", "bob", "--direction", "in", "--log", "none",
                 "--sender", EXT, "--rcpt", ours("bob")], as_pipe=True, input=late.decode())
        ok(r.returncode == 0, "relay-a stores a late copy for bob", r.stderr)
        run(["cp", "-a", f"{roots['relay-a']}/.", copies[0]], check=True)
        new = [e for e in stored(roots["relay-a"])[("bob", "INBOX")] if e[0] == "mr-late@client.test"]
        want[("bob", "INBOX")] += new
        merge(conf, users, copies)
        compare(view(), want, "merged again after a late copy")
    except Exception:
        ok(False, "dovecot: run", traceback.format_exc())
    finally:
        left = dov.stop()
        ok(not left, "dovecot stopped, nothing of it left", left)
        STARTED[:] = [s for s in STARTED if s[0] != "dovecot"]

    # dsync carries Dovecot's subscriptions, not Courier's courierimapsubscribed: check
    # finds exactly that, for each user with a Sent folder, and nothing else; --repair
    # adds the lines and the root is clean.
    r = run([MAILKEEP, "check", "--json", "--root", merged], as_pipe=True)
    try:
        found = sorted((p["user"], p["kind"], os.path.basename(p["path"])) for p in json.loads(r.stdout)["problems"])
    except (ValueError, KeyError, TypeError):
        found = f"no JSON report: {r.stdout!r} {r.stderr!r}"
    with_sent = sorted({u for got in per_relay.values() for (u, f) in got if f == "Sent"})
    expected = [(u, "unsubscribed", "courierimapsubscribed") for u in with_sent]
    ok(r.returncode == 1 and found == expected,
       f"mailkeep check of the merged root: exactly Courier's subscription of Sent missing for {with_sent} (exit 1)",
       f"exit {r.returncode}, found {found}, expected {expected}")
    r = run([MAILKEEP, "check", "--repair", "--root", merged], as_pipe=True)
    r = run([MAILKEEP, "check", "--root", merged], as_pipe=True)
    ok(r.returncode == 0, "mailkeep check of the merged root: clean after --repair", r.stdout + r.stderr)
    two_namespaces(copies, users)

    r = run([MAILKEEP, "deliver", "--root", merged, "--user", "carol", "--direction", "in", "--log", "none",
             "--sender", EXT, "--rcpt", ours("carol")], as_pipe=True, input=message("after-merge", EXT, ours("carol")).decode())
    ok(r.returncode == 0, "mailkeep deliver still stores into the merged root", r.stderr)


def terminated(signum, frame):
    """SIGTERM or SIGHUP (a CI time limit, run-e2e.sh's trap, a closed terminal): end the
    test through main's `finally`, which stops the daemons and removes the configs from
    trusted_configs. Later signals are ignored so that the cleaning is not cut short."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(f"terminated by signal {signal.Signals(signum).name}")


def main():
    t0 = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, terminated)
    try:
        main_test()
    except Exception:
        ok(False, "the test ran to its end", traceback.format_exc())
    except (SystemExit, KeyboardInterrupt) as e:
        ok(False, "the test ran to its end", f"{type(e).__name__}: {e}")
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        for name, pid in reversed(STARTED):
            stop_pid(name, pid)
        untrust()
        listed = [l for l in open(TRUSTED).read().splitlines() if l.startswith(WORK + "/")] \
            if os.path.exists(TRUSTED) else []
        ok(not listed, f"{TRUSTED} no longer lists this run's configs", listed)
    if checks.FAIL:
        for relay in RELAYS:
            for f in ("mainlog", "paniclog", "rejectlog"):
                p = os.path.join(WORK, relay, "log", f)
                if os.path.exists(p):
                    print(f"---- {relay} {f}\n" + open(p, errors="replace").read()[-4000:])
        p = os.path.join(WORK, "serve", "dovecot", "dovecot.log")
        if os.path.exists(p):
            print("---- dovecot.log\n" + open(p, errors="replace").read()[-4000:])
    print(f"run took {time.monotonic() - t0:.1f} s")
    print(f"{checks.PASS} passed, {checks.FAIL} failed")
    sys.exit(1 if checks.FAIL else 0)


if __name__ == "__main__":
    main()
