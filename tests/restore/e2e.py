#!/usr/bin/python3
"""The move-to-a-new-provider test (issue 22): a backup root filled by mailkeep (live copies,
a Google-Takeout replay, the real-Exim test's root when there is one, and one message over
25 MB) is served by Dovecot exactly as `mailkeep serve-config dovecot` configures it, and
restore/to-imap.sh copies every user with mbsync into a second, empty Dovecot on loopback
that stands in for the new provider: its own users, a "Sent Items" folder, and a 25 MB
message limit (quota plugin, quota_max_mail_size, which refuses an APPEND over it).

Checked through imaplib on the target, for every message of the backup: it is in the right
folder, its body and headers are the stored file's (plus the one X-TUID header line mbsync
adds), its RFC822.SIZE, its INTERNALDATE is the file's mtime; the one too large is listed
by the script (exit 1) and stands as mbsync's placeholder. A second run copies nothing. A
user without a login at the provider is FAILED, and a message the provider refuses (a
--max-size above its limit) is reported, on that run and the next.

usage: e2e.py WORK MAILKEEP REPO     (run by run-e2e.sh, as root)
Prints one line per check and, last, "N passed, M failed"; exit status 1 on any failure.
"""
import datetime
import imaplib
import os
import re
import subprocess
import sys
import time
import traceback

sys.dont_write_bytecode = True
WORK, MAILKEEP, REPO = sys.argv[1:4]
sys.path.insert(0, os.path.join(REPO, "tests", "imap"))
import servers    # noqa: E402
import takeout    # noqa: E402
import checks     # noqa: E402
from checks import ok  # noqa: E402

ROOT = os.path.join(WORK, "backup")
TARGET_MAIL = os.path.join(WORK, "provider-mail")
STATE = os.path.join(WORK, "restore-state")
SCRIPT = os.path.join(REPO, "restore", "to-imap.sh")
PIPE_USER = "mailbackup"
AS_PIPE = ["setpriv", f"--reuid={PIPE_USER}", f"--regid={PIPE_USER}", "--init-groups"]
LIMIT = 25 * 1024 * 1024
TARGET_PW = "provider-secret"
# the provider's names for the backup's folders
TARGET_BOX = {"INBOX": "INBOX", "Sent": "Sent Items", "Chats": "Chats"}

SERVERS = []


def run(cmd, as_pipe=False, **kw):
    return subprocess.run((AS_PIPE if as_pipe else []) + cmd, capture_output=True, **kw)


def msg(mid, subject, body):
    return (b"From: Someone <someone@example.net>\nTo: alice@example.com\nSubject: " + subject +
            b"\nDate: Sat, 28 Nov 2026 10:00:00 +0000\nMessage-ID: <" + mid.encode() + b">\n\n" + body)


LIVE = [
    ("alice", "in", "ext@example.net", "plain@restore", msg("plain@restore", b"plain", b"Hello Alice.\n")),
    ("alice", "in", "", "bounce@restore", msg("bounce@restore", b"bounce", b"null sender\n")),
    ("alice", "in", "ext@example.net", "quoted@restore",
     msg("quoted@restore", "From_ lines, ünïcödé".encode(), b"From here on\n>From there\n")),
    ("alice", "out", "alice@example.com", "sent@restore", msg("sent@restore", b"sent", b"to bob\n")),
    ("bob", "in", "alice@example.com", "tobob@restore", msg("tobob@restore", b"to bob", b"hi bob\n")),
    # a user of the backup the provider has no login for: reported FAILED, never left out
    ("zed", "in", "ext@example.net", "tozed@restore", msg("tozed@restore", b"to zed", b"hi zed\n")),
]
NO_LOGIN = "zed"
BIG_ID = "big@restore"


def fill():
    os.makedirs(ROOT)
    pw = subprocess.run(["getent", "passwd", PIPE_USER], capture_output=True, text=True).stdout.split(":")
    os.chown(ROOT, int(pw[2]), int(pw[3]))
    exim_root = os.environ.get("MAILKEEP_E2E_ROOT", "")
    if exim_root and os.path.isdir(exim_root):
        r = run(["cp", "-a", f"{exim_root}/.", ROOT])
        ok(r.returncode == 0, f"copied the real-Exim test's backup {exim_root} in", r.stderr)
    else:
        print(f"note: no real-Exim backup to add (MAILKEEP_E2E_ROOT={exim_root or 'unset'})")
    r = run([MAILKEEP, "init", "--root", ROOT], as_pipe=True)
    ok(r.returncode == 0, "mailkeep init", r.stderr)
    for user, direction, sender, mid, data in LIVE:
        r = run([MAILKEEP, "deliver", "--root", ROOT, "--user", user, "--direction", direction, "--sender", sender,
                 "--log", "none", "--rcpt", f"{user}@example.com"], as_pipe=True, input=data)
        ok(r.returncode == 0, f"deliver {direction} {user} {mid}", r.stderr)
    # over the limit: 26 MiB of base64-like lines (27.1 MB with CRLF as IMAP counts it)
    big = msg(BIG_ID, b"too large for the provider", b"".join(b"%075d\n" % i for i in range(26 * 1024 * 1024 // 76)))
    r = run([MAILKEEP, "deliver", "--root", ROOT, "--user", "alice", "--direction", "in", "--sender",
             "ext@example.net", "--log", "none", "--rcpt", "alice@example.com"], as_pipe=True, input=big)
    ok(r.returncode == 0, f"deliver a {len(big)} byte message to alice", r.stderr)
    os.makedirs(os.path.join(WORK, "takeout"), mode=0o755)
    for user, messages in takeout.MBOXES.items():
        path = os.path.join(WORK, "takeout", f"{user}.mbox")
        with open(path, "wb") as f:
            f.write(takeout.mbox(messages))
        os.chmod(path, 0o644)
        r = run([MAILKEEP, "replay", "--root", ROOT, "--user", user, "--domain", "example.com", "--log", "none",
                 path], as_pipe=True)
        ok(r.returncode == 0, f"replay the Takeout mbox of {user} ({len(messages)} messages)", r.stderr)


def snapshot():
    """{user: {folder: [(mtime, bytes, path)]}} of the backup, before anything serves it."""
    snap = {}
    for user in sorted(os.listdir(ROOT)):
        udir = os.path.join(ROOT, user)
        if user.startswith(".") or not os.path.isdir(udir):
            continue
        snap[user] = {}
        for folder, sub in (("INBOX", ""), ("Sent", ".Sent"), ("Chats", ".Chats")):
            files = []
            for d in ("new", "cur"):
                p = os.path.join(udir, sub, d)
                for name in sorted(os.listdir(p)) if os.path.isdir(p) else []:
                    f = os.path.join(p, name)
                    if not name.startswith(".") and os.path.isfile(f):
                        files.append((int(os.stat(f).st_mtime), open(f, "rb").read(), f))
            if files or os.path.isdir(os.path.join(udir, sub, "new")):
                snap[user][folder] = files
    return snap


TARGET_CONF = """\
# The stand-in for the new provider: its own users (any name, one password), a
# "Sent Items" folder, and a 25 MB limit on a message (the quota plugin refuses an APPEND
# over quota_max_mail_size with NO [LIMIT]).
instance_name = mailkeep-provider
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{mail}/%n
first_valid_uid = {uid}
passdb {{
  driver = static
  args = password={pw}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox "Sent Items" {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
mail_plugins = quota
plugin {{
  quota = count:User quota
  quota_rule = *:storage=10G
  quota_vsizes = yes
  quota_max_mail_size = 25M
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def start_servers(users):
    pw = subprocess.run(["getent", "passwd", PIPE_USER], capture_output=True, text=True).stdout.split(":")
    src_port, dst_port = servers.free_port(), servers.free_port()
    r = run([MAILKEEP, "serve-config", "dovecot", "--root", ROOT, "--out", os.path.join(WORK, "dovecot"),
             "--listen", "127.0.0.1", "--port", str(src_port)])
    ok(r.returncode == 0, "mailkeep serve-config dovecot", r.stderr)
    with open(os.path.join(WORK, "source-passwords"), "wb") as f:
        f.write(r.stdout)
    d = os.path.join(WORK, "provider")
    os.makedirs(d)
    os.makedirs(TARGET_MAIL)
    os.chown(TARGET_MAIL, int(pw[2]), int(pw[3]))
    with open(os.path.join(d, "dovecot.conf"), "w") as f:
        f.write(TARGET_CONF.format(d=d, mail=TARGET_MAIL, uid=pw[2], gid=pw[3], pw=TARGET_PW, port=dst_port))
    with open(os.path.join(WORK, "logins"), "w") as f:
        f.write("# user\tlogin at the provider\tpassword\n")
        f.writelines(f"{u}\tnew-{u}\t{TARGET_PW}\n" for u in users if u != NO_LOGIN)
    src = servers.Dovecot(os.path.join(WORK, "dovecot", "dovecot.conf"), src_port)
    dst = servers.Dovecot(os.path.join(d, "dovecot.conf"), dst_port)
    for s in (src, dst):
        SERVERS.append(s)
        s.start()
    ok(True, f"source Dovecot on 127.0.0.1:{src_port}, provider Dovecot on 127.0.0.1:{dst_port}")
    return src, dst


def to_imap(src, dst, logins="logins", state=STATE, max_size="25m", who="--all", home=None):
    """One run of the script; state None: its default (below HOME, which `home` sets)."""
    cmd = [SCRIPT, "--logins", os.path.join(WORK, logins), "--source-passwords",
           os.path.join(WORK, "source-passwords"), "--source-port", str(src.port), "--port", str(dst.port),
           "--tls", "none"] + (["--state", state] if state else []) + ["--max-size", max_size, ROOT, who, "127.0.0.1"]
    env = dict(os.environ)
    if home:
        env["HOME"] = home
        env.pop("XDG_STATE_HOME", None)
    t0 = time.monotonic()
    r = run(cmd, text=True, env=env)
    return r, time.monotonic() - t0


def crlf(data):
    """A stored file as IMAP shows it: every line end CRLF (a stored CR LF is one too)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def crlf_size(data):
    return len(crlf(data))


def without_tuid(data):
    """A message as the provider has it, without the X-TUID line mbsync adds."""
    return re.sub(rb"(?m)^X-TUID: [^\r\n]*\r\n", b"", data, count=1)


def target_messages(user, box):
    """[(internaldate, rfc822.size, bytes)] of a target folder, or None when it is missing."""
    m = imaplib.IMAP4("127.0.0.1", DST_PORT, timeout=60)
    m.login(f"new-{user}", TARGET_PW)
    typ, _ = m.select(f'"{box}"', readonly=True)
    if typ != "OK":
        m.logout()
        return None
    typ, data = m.fetch("1:*", "(INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    out = []
    for item in data if typ == "OK" else []:
        if isinstance(item, tuple):
            meta = item[0].decode(errors="replace")
            when = re.search(r'INTERNALDATE "([^"]+)"', meta).group(1)
            when = int(datetime.datetime.strptime(when.strip(), "%d-%b-%Y %H:%M:%S %z").timestamp())
            size = int(re.search(r"RFC822\.SIZE (\d+)", meta).group(1))
            out.append((when, size, item[1]))
    m.logout()
    return out


def verify(snap, run_no):
    counts = {}
    for user, folders in snap.items():
        for folder, files in folders.items():
            box = TARGET_BOX[folder]
            got = target_messages(user, box)
            where = f"run {run_no}: {user}/{folder} -> {box}"
            if not files:
                ok(not got, f"{where}: nothing to copy, nothing there")
                continue
            if not ok(got is not None, f"{where}: the folder exists on the provider"):
                continue
            counts[(user, folder)] = len(got)
            ok(len(got) == len(files), f"{where}: {len(files)} messages, one each", f"got {len(got)}")
            by_bytes = {}
            for when, size, data in got:
                by_bytes.setdefault(without_tuid(data), []).append((when, size, data))
            for mtime, data, path in files:
                name = os.path.basename(path)
                if crlf_size(data) > LIMIT:
                    mid = re.search(rb"(?m)^Message-ID: <([^>]*)>", data).group(1)
                    ph = [g for g in got if b"[placeholder]" in g[2][:2000] and mid in g[2][:2000]]
                    ok(len(ph) == 1 and ph[0][0] == mtime, f"{where}: {name} ({crlf_size(data)} bytes) stands as "
                       "mbsync's placeholder with its date", ph[:1])
                    continue
                found = by_bytes.get(crlf(data), [])
                if not ok(len(found) >= 1, f"{where}: {name}: headers and body as stored (X-TUID aside)"):
                    continue
                when, size, raw = found.pop()
                tuid = re.search(rb"(?m)^X-TUID: [^\r\n]*\r\n", raw)
                extra = len(tuid.group(0)) if tuid else 0
                ok(size == crlf_size(data) + extra, f"{where}: {name}: RFC822.SIZE {size} = stored size with CRLF"
                   f" + {extra} (X-TUID)", f"stored {crlf_size(data)}")
                ok(when == mtime, f"{where}: {name}: INTERNALDATE is the backup's ({mtime})", f"got {when}")
    return counts


def main():
    global DST_PORT
    t_start = time.monotonic()
    try:
        fill()
        snap = snapshot()
        big = [(p, d) for u in snap.values() for f in u.values() for _, d, p in f if crlf_size(d) > LIMIT]
        n = sum(len(f) for u in snap.values() for f in u.values())
        ok(len(big) == 1 and n >= 12, f"the backup holds {n} messages of {len(snap)} users, {len(big)} over 25 MB")
        src, dst = start_servers(sorted(snap))
        DST_PORT = dst.port
        # What --all must not take for users: lost+found, a dot directory, a directory that
        # holds no Maildir.
        os.makedirs(os.path.join(ROOT, "lost+found"), mode=0o700)
        os.makedirs(os.path.join(ROOT, ".trash", "new"))
        os.makedirs(os.path.join(ROOT, "notes"))
        r, secs = to_imap(src, dst)
        print("  to-imap.sh, first run:\n" + "".join(f"    {l}\n" for l in (r.stdout + r.stderr).splitlines()))
        ok(r.returncode == 1, f"first run: exit 1 (one message not copied) in {secs:.1f} s", r.returncode)
        lines = {l.split(":")[0]: l for l in r.stdout.splitlines() if ": " in l}
        ok(f"to-imap: {len(snap)} users," in r.stdout and not {"lost+found", ".trash", "notes"} & set(lines),
           f"--all: the {len(snap)} user Maildirs, not lost+found, .trash or notes", r.stdout)
        ok("logins is readable by others" in r.stderr, "a logins file others can read: warned", r.stderr)
        ok(all(" OK:" in lines.get(u, "") for u in snap if u not in ("alice", NO_LOGIN)),
           "first run: every user but alice and zed OK", lines)
        ok("FAILED: no target login" in lines.get(NO_LOGIN, ""), "first run: zed, without a login, FAILED",
           lines.get(NO_LOGIN))
        del snap[NO_LOGIN]
        ok("FAILED" in lines.get("alice", "") and "1 too large" in lines.get("alice", ""),
           "first run: alice FAILED, 1 too large", lines.get("alice"))
        listed = open(os.path.join(STATE, "alice", "too-large.txt")).read().splitlines()
        # The file's name as listed may have gained flags since (the source Dovecot moves
        # new/ to cur/), its base stays.
        base = lambda path: os.path.basename(path).split(":")[0]  # noqa: E731
        ok(len(listed) == 1 and base(listed[0].split("\t")[2]) == base(big[0][0])
           and listed[0].split("\t")[0] == "INBOX" and int(listed[0].split("\t")[1]) == crlf_size(big[0][1]),
           "too-large.txt lists the big message: folder, IMAP size, file", listed)
        first = verify(snap, 1)
        r, secs = to_imap(src, dst)
        print("  to-imap.sh, second run:\n" + "".join(f"    {l}\n" for l in r.stdout.splitlines()))
        ok(r.returncode == 1, f"second run: exit 1 again (the big message is still not copied), {secs:.1f} s")
        second = verify(snap, 2)
        ok(first == second and first, "second run copied nothing: every folder has the same count", (first, second))
        r, _ = to_imap(src, dst, who="bob")
        ok(r.returncode == 0 and "bob: OK:" in r.stdout, "a user whose every message is on the target: exit 0",
           r.stdout + r.stderr)
        # The default state: below $HOME, never in the backup root.
        home = os.path.join(WORK, "home")
        os.makedirs(home)
        with open(os.path.join(WORK, "logins-bob"), "w") as f:
            f.write(f"bob\tfresh-bob\t{TARGET_PW}\n")
        os.chmod(os.path.join(WORK, "logins-bob"), 0o600)
        r, _ = to_imap(src, dst, "logins-bob", None, who="bob", home=home)
        ok(r.returncode == 0 and "bob: OK:" in r.stdout, "bob into an empty mailbox, default state: exit 0",
           r.stdout + r.stderr)
        ok(os.path.isfile(os.path.join(home, ".local/state/mailkeep-restore/bob/mbsyncrc"))
           and not os.path.exists(os.path.join(ROOT, "restore")),
           "the default state is $HOME/.local/state/mailkeep-restore, outside the root", os.listdir(ROOT))
        ok("logins-bob is readable" not in r.stderr, "a logins file of mode 0600: no warning", r.stderr)
        # Bad usage: one line, exit 2, nothing run.
        pwned = os.path.join(WORK, "pwned")
        for size in ("25MB", f"ARGS[$(touch {pwned})]"):
            r, _ = to_imap(src, dst, max_size=size, who="bob")
            ok(r.returncode == 2 and len(r.stderr.splitlines()) == 1 and not os.path.exists(pwned),
               f"--max-size {size}: exit 2, one line, nothing run", (r.returncode, r.stderr))
        r, _ = to_imap(src, dst, state=os.path.join(ROOT, "restore"), who="bob")
        ok(r.returncode == 2 and "inside the backup root" in r.stderr and not os.path.exists(os.path.join(ROOT, "restore")),
           "--state inside the root: exit 2, nothing made there", (r.returncode, r.stderr))
        # An admin who gives a limit above the provider's: the refusal is caught all the same.
        with open(os.path.join(WORK, "logins-other"), "w") as f:
            f.write(f"alice\tother-alice\t{TARGET_PW}\n")
        r, _ = to_imap(src, dst, "logins-other", os.path.join(WORK, "state-other"), "100m", "alice")
        ok(r.returncode == 1 and "1 refused by the target" in r.stdout,
           "--max-size above the provider's limit: the message the provider refuses is reported, exit 1",
           r.stdout + r.stderr)
        r, _ = to_imap(src, dst, "logins-other", os.path.join(WORK, "state-other"), "100m", "alice")
        ok(r.returncode == 1 and "1 not copied" in r.stdout,
           "run again: mbsync's state counts the refused message done, the script still reports it", r.stdout)
        for s in SERVERS:
            left = s.stop()
            ok(not left and servers.port_closed(s.port), f"Dovecot on {s.port} stopped, nothing left", left)
    except Exception:
        ok(False, "the test ran to its end", traceback.format_exc())
        for s in SERVERS:
            print(s.logtext()[-3000:])
            try:
                s.stop()
            except Exception:
                pass
    print(f"{time.monotonic() - t_start:.1f} s")
    with open(os.path.join(WORK, "summary"), "w") as f:
        f.write(f"{checks.PASS} {checks.FAIL}\n")
    print(f"{checks.PASS} passed, {checks.FAIL} failed")
    sys.exit(1 if checks.FAIL else 0)


DST_PORT = None
main()
