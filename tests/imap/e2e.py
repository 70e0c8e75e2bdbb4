#!/usr/bin/python3
"""The restore test: fill a backup root with mailkeep (live copies as Exim's pipe would
make them, a Google-Takeout replay, and the real-Exim test's root when there is one), then
serve it with Dovecot (the config `mailkeep serve-config dovecot` writes, unchanged) and
with Courier IMAP, on loopback, and read every user's mail back through imaplib.

usage: e2e.py WORK MAILKEEP COURIER_ROOT      (run by run-e2e.sh, as root)
Prints one line per check and, last, "N passed, M failed"; exit status 1 on any failure.
"""
import datetime
import hashlib
import imaplib
import json
import os
import re
import subprocess
import sys
import time
import traceback

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers    # noqa: E402
import takeout    # noqa: E402
import checks    # noqa: E402
from checks import ok  # noqa: E402

WORK, MAILKEEP, COURIER_ROOT = sys.argv[1:4]
ROOT = os.path.join(WORK, "backup")              # served by Dovecot
ROOT_COURIER = os.path.join(WORK, "backup-courier")  # the same backup, copied, for Courier
PIPE_USER = "mailbackup"
DOMAIN = "example.com"
AS_PIPE = ["setpriv", f"--reuid={PIPE_USER}", f"--regid={PIPE_USER}", "--init-groups"]

SERVERS = []   # started ones, for their logs on failure


def run(cmd, as_pipe=False, **kw):
    return subprocess.run((AS_PIPE if as_pipe else []) + cmd, capture_output=True, **kw)


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# ---------------------------------------------------------------- live copies
def msg(mid, subject, body, extra=b"", nl=True):
    head = (b"From: Someone <someone@example.net>\nTo: alice@example.com\n"
            b"Subject: " + subject + b"\nDate: Sat, 28 Nov 2026 10:00:00 +0000\n"
            b"Message-ID: <" + mid.encode() + b">\nMIME-Version: 1.0\n"
            b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n" + extra)
    data = head + b"\n" + body
    return data if nl else data.rstrip(b"\n")


# (user, direction, sender, rcpts, message-id, stdin)
LIVE = [
    ("alice", "in", "ext@example.net", ["alice@example.com"], "plain@e2e",
     msg("plain@e2e", b"plain", b"Hello Alice.\n")),
    ("alice", "in", "ext@example.net", ["alice@example.com"], "8bit@e2e",
     msg("8bit@e2e", "Grüße aus Köln".encode(), "Umlaute: äöü ß, and € — 8-bit in head and body.\n".encode())),
    ("alice", "in", "ext@example.net", ["alice@example.com"], "nonl@e2e",
     msg("nonl@e2e", b"no final newline", b"last line without newline\n", nl=False)),
    ("alice", "in", "", ["alice@example.com"], "bounce@e2e",
     msg("bounce@e2e", b"Undelivered Mail", b"null sender\n")),
    ("alice", "in", "ext@example.net", ["alice@example.com"], "crlf@e2e",
     crlf(msg("crlf@e2e", b"sent with CRLF", b"line one\nline two\n"))),
    ("alice", "in", "ext@example.net", ["alice@example.com"], "fromline@e2e",
     b"From ext@example.net Sat Nov 28 10:00:00 2026\n" + msg("fromline@e2e", b"Exim prefix", b"body\n") + b"\n"),
    ("alice", "out", "alice@example.com", ["bob@example.com", "ext@example.net", "hidden@example.org"], "sent1@e2e",
     msg("sent1@e2e", "Bcc'd, with ünïcödé".encode(), b"to bob and ext, bcc hidden\n")),
    ("bob", "in", "alice@example.com", ["bob@example.com"], "tobob@e2e",
     msg("tobob@e2e", b"to bob", b"hi bob\n")),
    ("bob", "out", "bob@example.com", ["ext@example.net"], "frombob@e2e",
     msg("frombob@e2e", "Antwort".encode(), "8-bit and no final newline: ñ\n".encode(), nl=False)),
    # a user who only ever sent mail: mailkeep creates .Sent but not the INBOX's cur/new/tmp
    ("carol", "out", "carol@example.com", ["ext@example.net"], "carol@e2e",
     msg("carol@e2e", b"only sent", b"carol never receives\n")),
]


def deliver_live(expected):
    for user, direction, sender, rcpts, mid, data in LIVE:
        t0 = time.time()
        r = run([MAILKEEP, "deliver", "--root", ROOT, "--user", user, "--direction", direction,
                 "--sender", sender, "--log", "none", "--dedup", "--rcpt", *rcpts], as_pipe=True, input=data)
        t1 = time.time()
        owner = next((r_ for r_ in rcpts if r_.split("@")[0] == user), rcpts[0]) if direction == "in" else sender
        expected[mid] = dict(kind="live", t0=int(t0), t1=int(t1) + 1,
                             return_path=f"Return-Path: <{sender}>", delivered_to=f"Delivered-To: {owner or user}")
        ok(r.returncode == 0, f"deliver {direction} {user} {mid} as {PIPE_USER}", r.stderr.decode(errors="replace"))


def replay(expected):
    """The Takeout replay step; skipped (said so) while `mailkeep replay` does not exist."""
    probe = run([MAILKEEP, "replay", "--help"])
    if probe.returncode != 0:
        print("SKIP replay: mailkeep replay not available")
        return
    os.makedirs(os.path.join(WORK, "takeout"), mode=0o755, exist_ok=True)
    for user, messages in takeout.MBOXES.items():
        path = os.path.join(WORK, "takeout", f"{user}.mbox")
        with open(path, "wb") as f:
            f.write(takeout.mbox(messages))
        os.chmod(path, 0o644)
        r = run([MAILKEEP, "replay", "--root", ROOT, "--user", user, "--direction", "auto",
                 "--domain", DOMAIN, "--log", "none", path], as_pipe=True)
        err = r.stderr.decode(errors="replace")
        if r.returncode != 0 and "not built" in err:
            print("SKIP replay: mailkeep replay not available")
            return
        ok(r.returncode == 0, f"replay Takeout mbox of {user} ({len(messages)} messages, CRLF) as {PIPE_USER}", err)
        for m in messages:
            expected[m["id"]] = dict(kind="replay", date=m["epoch"], folder=m["folder"])


# ---------------------------------------------------------------- what is on disk
def folders_of(root, user):
    """{folder name as Dovecot shows it: path} for INBOX and every Maildir++ folder."""
    base = os.path.join(root, user)
    out = {"INBOX": base}
    for d in sorted(os.listdir(base)):
        p = os.path.join(base, d)
        if d.startswith(".") and os.path.isdir(p) and any(
                os.path.exists(os.path.join(p, x)) for x in ("cur", "new", "tmp", "maildirfolder")):
            out[d[1:]] = p
    return out


def users_of(root):
    return sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))


def snapshot(root):
    """{user: {folder: {base name: info}}} of every message file in new/ and cur/."""
    snap = {}
    for user in users_of(root):
        snap[user] = {}
        for folder, path in folders_of(root, user).items():
            files = {}
            for sub in ("new", "cur"):
                d = os.path.join(path, sub)
                for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                    if name.startswith("."):
                        continue
                    p = os.path.join(d, name)
                    st = os.stat(p)
                    data = open(p, "rb").read()
                    head = data.split(b"\n\n", 1)[0]
                    mid = re.search(rb"^Message-ID:\s*<([^>]*)>", head, re.I | re.M)
                    files[name.split(":")[0]] = dict(
                        sub=sub, name=name, data=data, mtime=int(st.st_mtime), uid=st.st_uid, mode=st.st_mode,
                        mid=mid.group(1).decode(errors="replace") if mid else None,
                        hdr=headers(head, ("return-path", "delivered-to")))
            snap[user][folder] = files
    return snap


def headers(head, names):
    """The header lines called one of `names` (lower case), in file order."""
    return [l.decode(errors="replace") for l in head.split(b"\n")
            if l.split(b":", 1)[0].strip().lower().decode(errors="replace") in names]


# ---------------------------------------------------------------- IMAP
def literals(data):
    """{seq: literal} from an imaplib FETCH answer with one literal per message."""
    out = {}
    for item in data:
        if isinstance(item, tuple):
            out[int(item[0].split()[0])] = item[1]
    return out


def metas(data):
    out = {}
    for item in data:
        line = item[0] if isinstance(item, tuple) else item
        if isinstance(line, bytes) and re.match(rb"\d+ \(", line):
            out[int(line.split()[0])] = line.decode(errors="replace")
    return out


def internaldate(meta):
    m = re.search(r'INTERNALDATE "([^"]+)"', meta)
    return int(datetime.datetime.strptime(m.group(1).strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()) if m else None


def imap_name(server, folder):
    return folder if server == "dovecot" or folder == "INBOX" else f"INBOX.{folder}"


def verify_server(server, port, snap, passwords, expected):
    for user in sorted(snap):
        try:
            verify_user(server, port, user, snap, passwords, expected)
        except Exception:
            ok(False, f"{server} {user}: IMAP session", traceback.format_exc())


def verify_user(server, port, user, snap, passwords, expected):
    login = f"{user.capitalize()}@{DOMAIN.upper()}" if server == "dovecot" and user == "alice" else user
    try:
        m = imaplib.IMAP4("127.0.0.1", port, timeout=20)
        typ, _ = m.login(login, passwords[user])
    except Exception as e:
        ok(False, f"{server} {user}: LOGIN as {login}", e)
        return
    ok(typ == "OK", f"{server} {user}: LOGIN as {login} with the serve-config password")
    listed = [l.decode(errors="replace").rsplit(" ", 1)[1].strip('"') for l in m.list()[1] if l]
    want = sorted(imap_name(server, f) for f in snap[user])
    ok(sorted(listed) == want, f"{server} {user}: LIST shows {want}", f"got {listed}")
    subscribed = [l.decode(errors="replace").rsplit(" ", 1)[1].strip('"') for l in m.lsub()[1] if l]
    want_sub = sorted(imap_name(server, f) for f in snap[user] if f in ("Sent", "Chats"))
    ok(set(want_sub) <= set(subscribed), f"{server} {user}: LSUB shows {want_sub or 'nothing needed'} subscribed",
       f"got {subscribed}")
    for folder, files in snap[user].items():
        verify_folder(server, m, user, folder, files, expected)
    m.logout()


def verify_folder(server, m, user, folder, files, expected):
    box = imap_name(server, folder)
    where = f"{server} {user}/{box}"
    typ, dat = m.select(f'"{box}"')
    n = int(dat[0]) if typ == "OK" else -1
    if not ok(n == len(files), f"{where}: SELECT shows all {len(files)} stored messages", f"{typ} {dat}"):
        return
    if n == 0:
        return
    meta = metas(m.fetch("1:*", "(UID INTERNALDATE RFC822.SIZE)")[1])
    bodies = literals(m.fetch("1:*", "(BODY.PEEK[])")[1])
    hdrs = literals(m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (RETURN-PATH DELIVERED-TO)])")[1])
    by_wire = {crlf(f["data"]): base for base, f in files.items()}
    problems = {"body": [], "size": [], "headers": [], "date": []}
    seen = set()
    for seq in range(1, n + 1):
        body = bodies.get(seq)
        base = by_wire.get(body)
        if base is None:
            problems["body"].append(f"#{seq}: body matches no stored file: {body[:200]!r}")
            continue
        seen.add(base)
        f = files[base]
        size = re.search(r"RFC822\.SIZE (\d+)", meta.get(seq, ""))
        if not size or int(size.group(1)) != len(crlf(f["data"])):
            problems["size"].append(f"{base}: RFC822.SIZE {size and size.group(1)}, file {len(crlf(f['data']))} with CRLF")
        want_hdr = "".join(f"{h}\r\n" for h in f["hdr"]) + "\r\n"
        got_hdr = (hdrs.get(seq) or b"").decode(errors="replace")
        e = expected.get(f["mid"])
        if got_hdr != want_hdr or (e and e["kind"] == "live" and f["hdr"] != [e["return_path"], e["delivered_to"]]):
            problems["headers"].append(f"{base}: got {got_hdr!r}, stored {want_hdr!r}, envelope {e}")
        idate = internaldate(meta.get(seq, ""))
        date_ok = idate == f["mtime"]
        if e and e["kind"] == "live":
            date_ok = date_ok and e["t0"] - 1 <= idate <= e["t1"] + 1
        if e and e["kind"] == "replay":
            date_ok = date_ok and idate == e["date"]
        if not date_ok:
            problems["date"].append(f"{base}: INTERNALDATE {idate}, mtime {f['mtime']}, expected {e}")
    missing = sorted(set(files) - seen)
    ok(not problems["body"] and not missing, f"{where}: BODY[] of every message equals its file (LF -> CRLF)",
       "\n".join(problems["body"] + [f"not served: {x}" for x in missing]))
    ok(not problems["size"], f"{where}: RFC822.SIZE of every message is the file's size with CRLF",
       "\n".join(problems["size"]))
    ok(not problems["headers"], f"{where}: Return-Path and Delivered-To as stored (and as the envelope said)",
       "\n".join(problems["headers"]))
    kinds = sorted({expected[f['mid']]['kind'] for f in files.values() if f["mid"] in expected} or {"stored"})
    ok(not problems["date"], f"{where}: INTERNALDATE = mtime = {'/'.join(kinds)} date of every message",
       "\n".join(problems["date"]))
    # the server writes: new/ -> cur/, and flags into the names
    typ1, _ = m.store("1:*", "+FLAGS", "(\\Seen)")
    typ2, _ = m.store("1", "+FLAGS", "(\\Flagged)")
    flags = metas(m.fetch("1:*", "(FLAGS)")[1])
    ok(typ1 == typ2 == "OK" and all("\\Seen" in x for x in flags.values()) and "\\Flagged" in flags.get(1, ""),
       f"{where}: STORE +FLAGS (\\Seen, \\Flagged) accepted and read back", f"{typ1} {typ2} {flags}")
    m.close()


def verify_disk_after(server, root, snap):
    """After the server: every message moved to cur/ with flags in its name, bytes, owner
    and mode unchanged."""
    bad = []
    for user, folders in snap.items():
        for folder, files in folders.items():
            path = folders_of(root, user)[folder]
            now = {}
            for sub in ("new", "cur"):
                for name in os.listdir(os.path.join(path, sub)):
                    if not name.startswith("."):
                        now[name.split(":")[0]] = (sub, name)
            for base, f in files.items():
                if base not in now:
                    bad.append(f"{user}/{folder}/{base}: gone")
                    continue
                sub, name = now[base]
                p = os.path.join(path, sub, name)
                st = os.stat(p)
                info = name.split(":2,", 1)[1] if ":2," in name else None
                if sub != "cur" or info is None or "S" not in info:
                    bad.append(f"{user}/{folder}: {sub}/{name} not moved to cur/ with S flag")
                if open(p, "rb").read() != f["data"] or st.st_uid != f["uid"] or st.st_mode != f["mode"]:
                    bad.append(f"{user}/{folder}/{name}: bytes, owner or mode changed")
            if files and not any("F" in n.split(":2,", 1)[-1] for s, n in now.values() if ":2," in n):
                bad.append(f"{user}/{folder}: no file carries the F flag")
    ok(not bad, f"{server}: moved every message new/ -> cur/ and wrote flags into the names, "
                f"bytes/owner/mode unchanged", "\n".join(bad))


def stop(srv):
    left = srv.stop()
    ok(not left, f"{srv.name}: stopped by SIGTERM to its pid, no process left", left)
    ok(servers.port_closed(srv.port) and not servers.listeners(srv.port), f"{srv.name}: port {srv.port} closed")


def mailkeep_check(root):
    r = run([MAILKEEP, "check", "--root", root])
    out = (r.stdout + r.stderr).decode(errors="replace")
    return r.returncode, out


# ---------------------------------------------------------------- main
def restore_test():
    pw_ent = subprocess.run(["getent", "passwd", PIPE_USER], capture_output=True, text=True).stdout.split(":")
    uid, gid = int(pw_ent[2]), int(pw_ent[3])
    os.makedirs(ROOT)
    os.chown(ROOT, uid, gid)
    os.chmod(ROOT, 0o750)
    exim_root = os.environ.get("MAILKEEP_E2E_ROOT", "")
    if exim_root and os.path.isdir(exim_root):
        r = run(["cp", "-a", f"{exim_root}/.", ROOT])
        ok(r.returncode == 0, f"copied the real-Exim test's backup {exim_root} in", r.stderr)
    else:
        print(f"note: no real-Exim backup to add (MAILKEEP_E2E_ROOT={exim_root or 'unset'})")
    # As the package does; a copied real-Exim root brings its marker ("already initialised").
    r = run([MAILKEEP, "init", "--root", ROOT], as_pipe=True)
    ok(r.returncode == 0, f"mailkeep init --root {ROOT} as {PIPE_USER}", r.stderr.decode(errors="replace"))
    expected = {}
    deliver_live(expected)
    replay(expected)

    rc, out = mailkeep_check(ROOT)
    print("  mailkeep check:\n" + "".join(f"    {l}\n" for l in out.splitlines()))
    if rc == 1:
        r = run([MAILKEEP, "check", "--repair", "--root", ROOT])
        print("  mailkeep check --repair:\n" + "".join(f"    {l}\n" for l in r.stdout.decode().splitlines()))
        rc, out = mailkeep_check(ROOT)
    ok(rc == 0, "mailkeep check: the backup is clean (after --repair of what is safe)", out)

    snap = snapshot(ROOT)
    n_msgs = sum(len(f) for u in snap.values() for f in u.values())
    ok(n_msgs >= len(LIVE), f"backup holds {n_msgs} messages of {len(snap)} users")
    subprocess.run(["cp", "-a", ROOT, ROOT_COURIER], check=True)

    # ---- Dovecot, configured by mailkeep serve-config, unchanged
    d_port, c_port = servers.free_port(), servers.free_port()
    out_dir = os.path.join(WORK, "dovecot")
    r = run([MAILKEEP, "serve-config", "dovecot", "--root", ROOT, "--out", out_dir,
             "--listen", "127.0.0.1", "--port", str(d_port)])
    text = r.stdout.decode(errors="replace")
    ok(r.returncode == 0, "mailkeep serve-config dovecot wrote a config", r.stderr.decode(errors="replace"))
    passwords = dict(l.split("\t") for l in text.splitlines() if l and not l.startswith("#"))
    ok(sorted(passwords) == sorted(snap), f"serve-config printed one password per user {sorted(snap)}", text)
    conf = os.path.join(out_dir, "dovecot.conf")
    pwfile = open(os.path.join(out_dir, "passwd")).read()
    st = os.stat(os.path.join(out_dir, "passwd"))
    ok(not any(p in pwfile for p in passwords.values()) and pwfile.count("{SSHA512}") == len(passwords)
       and st.st_mode & 0o007 == 0, "passwd holds only {SSHA512} hashes, not world-readable")
    conf_sum = hashlib.sha256(open(conf, "rb").read()).hexdigest()
    ok(not os.path.exists(os.path.join(out_dir, "local.conf")), "Dovecot runs the generated config, no overrides")

    dov = servers.Dovecot(conf, d_port)
    cour = servers.Courier(WORK, c_port, COURIER_ROOT,
                           [(u, uid, gid, os.path.join(ROOT_COURIER, u), passwords.get(u, "-")) for u in snap])
    for srv, root in ((dov, ROOT), (cour, ROOT_COURIER)):
        SERVERS.append(srv)
        try:
            srv.start()
            ok(True, f"{srv.name}: greeting on 127.0.0.1:{srv.port}: {srv.greeting[:60]}")
            lst = servers.listeners(srv.port)
            ok(len(lst) == 1 and f"127.0.0.1:{srv.port}" in lst[0], f"{srv.name}: listens on loopback only", lst)
            verify_server(srv.name, srv.port, snap, passwords, expected)
        except Exception:
            ok(False, f"{srv.name}: run", traceback.format_exc())
        finally:
            stop(srv)
        verify_disk_after(srv.name, root, snap)
    ok(hashlib.sha256(open(conf, "rb").read()).hexdigest() == conf_sum, "dovecot.conf unchanged by the run")

    # ---- after serving: mailkeep still delivers, and the servers' own files are no problem
    r = run([MAILKEEP, "deliver", "--root", ROOT, "--user", "alice", "--direction", "in", "--log", "none",
             "--sender", "late@example.net", "--rcpt", "alice@example.com"], as_pipe=True,
            input=msg("late@e2e", b"after the restore", b"still delivered\n"))
    ok(r.returncode == 0, "deliver still works into the maildirs the servers wrote into", r.stderr)
    for root in (ROOT, ROOT_COURIER):
        rc, out = mailkeep_check(root)
        ok(rc == 0, f"mailkeep check after serving {os.path.basename(root)}: clean", out)
    erase_drill(conf, d_port, passwords)
    left = [l for l in subprocess.run(["pgrep", "-af", WORK], capture_output=True, text=True).stdout.splitlines()
            if int(l.split()[0]) != os.getpid()]
    ok(not left, "no process of this run left (but this script)", "\n".join(left))


# ---------------------------------------------------------------- erasure (issue 21)
def erase_drill(conf, port, passwords):
    """After `erase` of one message of alice (by Message-ID, moved to cur/ and flagged by the
    servers above) and of all of bob's mail, Dovecot no longer shows them, the audit log
    names them, and `mailkeep check` is clean."""
    gone_id = "plain@e2e"
    base = [MAILKEEP, "erase", "--root", ROOT, "--reason", "restore drill"]
    dry = run(base + ["--user", "alice", "--message-id", f"<{gone_id}>", "--dry-run"], as_pipe=True)
    listed = [l for l in dry.stdout.decode(errors="replace").splitlines() if l.startswith("would remove ")]
    before = snapshot(ROOT)
    ok(dry.returncode == 0 and len(listed) == 1 and "folder=INBOX" in listed[0],
       "erase --dry-run lists alice's one message with that Message-ID", dry.stdout + dry.stderr)
    for args, what in ((["--user", "alice", "--message-id", f"<{gone_id}>"], f"alice's <{gone_id}>"),
                       (["--user", "bob"], "all of bob's mail")):
        r = run(base + args, as_pipe=True)
        ok(r.returncode == 0, f"mailkeep erase of {what} as {PIPE_USER}", r.stdout + r.stderr)
    after = snapshot(ROOT)
    alice_left = {f["mid"] for files in after["alice"].values() for f in files.values()}
    alice_before = {f["mid"] for files in before["alice"].values() for f in files.values()}
    ok(alice_left == alice_before - {gone_id}, f"only <{gone_id}> of alice's messages is gone from disk",
       f"before {sorted(alice_before)}, after {sorted(alice_left)}")
    ok(all(not files for files in after.get("bob", {}).values()), "bob's folders are empty on disk", after.get("bob"))
    entries = [json.loads(l) for l in open(os.path.join(ROOT, ".mailkeep", "audit.log"), "rb")]
    names = [(e["user"], r["folder"]) for e in entries if e["command"] == "erase" for r in e["removed"]]
    bob_count = sum(len(files) for files in before.get("bob", {}).values())
    ok(names.count(("alice", "INBOX")) == 1 and sum(1 for u, _ in names if u == "bob") == bob_count,
       f"the audit log (json) names alice's message and bob's {bob_count} once each", entries)
    dov = servers.Dovecot(conf, port)
    SERVERS.append(dov)
    try:
        dov.start()
        m = imaplib.IMAP4("127.0.0.1", port, timeout=20)
        m.login("alice", passwords["alice"])
        typ, dat = m.select('"INBOX"')
        found = m.search(None, "HEADER", "Message-ID", gone_id)[1][0].split()
        n_inbox = sum(1 for f in after["alice"]["INBOX"].values())
        ok(typ == "OK" and int(dat[0]) == n_inbox and not found,
           f"dovecot alice/INBOX: {n_inbox} messages, <{gone_id}> no longer shown", f"{typ} {dat} found={found}")
        m.logout()
        m = imaplib.IMAP4("127.0.0.1", port, timeout=20)
        m.login("bob", passwords["bob"])
        counts = {}
        for box in before.get("bob", {}):
            typ, dat = m.select(f'"{box}"')
            counts[box] = int(dat[0]) if typ == "OK" else -1
        m.logout()
        ok(counts and all(c == 0 for c in counts.values()), "dovecot bob: every folder shows 0 messages", counts)
    except Exception:
        ok(False, "dovecot after the erase", traceback.format_exc())
    finally:
        stop(dov)
    rc, out = mailkeep_check(ROOT)
    ok(rc == 0, "mailkeep check after the erase: clean", out)


def main():
    t_start = time.monotonic()
    try:
        restore_test()
    except Exception:
        ok(False, "restore test ran to its end", traceback.format_exc())
        for srv in SERVERS:
            if srv.proc is not None:
                stop(srv)
    if checks.FAIL:
        for srv in SERVERS:
            print(f"---- {srv.name} logs\n{srv.logtext()}")
    print(f"run took {time.monotonic() - t_start:.1f} s")
    print(f"{checks.PASS} passed, {checks.FAIL} failed")
    with open(os.path.join(WORK, "summary"), "w") as f:
        f.write(f"{checks.PASS} {checks.FAIL}\n")
    sys.exit(1 if checks.FAIL else 0)


if __name__ == "__main__":
    main()
