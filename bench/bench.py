#!/usr/bin/python3
"""Runs the side-by-side benchmark and writes every measurement to one JSON file.

Started by bench/run.sh (as the unprivileged user it creates), which has installed the
peers and built mailkeep and the C helpers into WORK/bin. Phases:

1. per message: the corpus delivered one process per message (bin/drive fork/execs the
   tool with the message file as stdin) by every tool into a fresh maildir, the tools
   alternating across rounds; then every stored message is checked by Message-ID;
2. fsyncs: one delivery of a typical message per tool under strace;
3. start-up: mailkeep's CPU time until it blocks reading stdin (bin/drive -s);
4. bulk: a large mbox into a fresh maildir by mailkeep replay and its peers, under
   /usr/bin/time -v for peak RSS.

Nothing here judges the numbers: bench/report.py turns the JSON into docs/BENCHMARKS.md.
"""

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
USER = "alice"
RCPT = "alice@example.org"
SENDER = "bob@example.com"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def sync():
    t = time.monotonic()
    os.sync()
    return time.monotonic() - t


def settle(ctx):
    """Waits until inodes freed by earlier rounds no longer slow down new files. ext4
    without a journal (like this machine's root) skips inodes deleted less than 60 s ago
    (300 s more while their inode table block is dirty) when it allocates one, one check
    per skipped inode; so nothing is deleted between two tools of a round, before a round
    everything is synced and left alone for `--settle` seconds, and WORK/run is marked a
    top directory (chattr +T) so that each tool's maildir lands in a block group of its own."""
    sync()
    if ctx.settle:
        log(f"settling {ctx.settle} s (recently freed inodes, writeback)")
        time.sleep(ctx.settle)


def round_order(tools, r):
    """The order of round r: rotated by r and reversed every other round, so that no tool
    always runs first (right after the settle) or right after the same neighbour. A reversed
    round is rotated one further, so that round r starts with tool r: rotating by r alone
    put tool 0 first in rounds 0 and 1 (mailkeep replay ran first after the settle in two of
    three bulk rounds on 2026-11-29, and a round's first tool ran slow in that run)."""
    k = (r + r % 2) % len(tools)
    order = tools[k:] + tools[:k]
    if r % 2:
        order.reverse()
    return order


def retire(ctx, path, label):
    """Moves a finished tool's directory out of the way without freeing its inodes (see
    settle(): a mass deletion slows every file creation for minutes after it, and 65 s of
    settling was not enough after 700 000 files). Emptied by empty_retired when the whole run
    is over: freed at the end of the per-message phase, they still slowed the first bulk round
    (ext4 keeps a freed inode off limits for 60 s, and 300 s more while its inode table block is
    dirty, which the next phase's new files make it). The price is disk: about 22 GB at the
    full sizes."""
    if os.path.lexists(path):
        dest = os.path.join(ctx.run, "retired")
        os.makedirs(dest, exist_ok=True)
        os.rename(path, os.path.join(dest, f"{label}-{time.monotonic_ns()}"))


def empty_retired(ctx):
    rmtree(os.path.join(ctx.run, "retired"))


def make_maildir(path):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def rmtree(path):
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", "--", path], check=True)  # faster than shutil.rmtree on 100 000 files


# ---------------------------------------------------------------------------------------
# Checking what a tool stored


MSGID = re.compile(rb"^message-id:[ \t]*(?:\r?\n[ \t]+)?<([^>\r\n]*)>", re.I | re.M)


def stored_ids(maildir):
    """Message-IDs of the files in new/ and cur/ (a list: duplicates must show)."""
    ids = []
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name.startswith("."):
                continue
            with open(os.path.join(d, name), "rb") as f:
                head = f.read(65536)
            end = head.find(b"\n\n")
            m = MSGID.search(head if end < 0 else head[: end + 1])
            ids.append(m.group(1).decode("latin-1") if m else None)
    return ids


def count_files(maildir):
    return sum(len([n for n in os.listdir(os.path.join(maildir, sub)) if not n.startswith(".")])
               for sub in ("new", "cur") if os.path.isdir(os.path.join(maildir, sub)))


def check(maildir, expected):
    """(stored count, problem or None): every expected Message-ID exactly once."""
    ids = stored_ids(maildir)
    if len(ids) != len(expected):
        return len(ids), f"{len(ids)} files for {len(expected)} messages"
    if sorted(i or "" for i in ids) != sorted(expected):
        missing = set(expected) - set(ids)
        return len(ids), f"Message-IDs differ ({len(missing)} missing)"
    return len(ids), None


# ---------------------------------------------------------------------------------------
# The tools


class Ctx:
    def __init__(self, a):
        self.work = os.path.abspath(a.work)
        self.bin = os.path.join(self.work, "bin")
        self.run = os.path.join(self.work, "run")
        self.home = os.path.join(self.work, "home")
        self.mk = os.path.join(self.bin, "mailkeep")
        self.settle = a.settle
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": self.home,
            "LANG": "C.UTF-8",
            "SENDER": SENDER,
            "RECIPIENT": RCPT,
            "LOCAL_PART": USER,
            "DOMAIN": "example.org",
            "TMPDIR": os.path.join(self.work, "tmp"),
        }
        os.makedirs(self.home, exist_ok=True)
        os.makedirs(self.env["TMPDIR"], exist_ok=True)
        os.makedirs(self.run, exist_ok=True)
        # ext4's Orlov allocator puts each new directory below a "top directory" in a block
        # group of its own: every tool's maildir gets inodes no other tool freed recently.
        subprocess.run(["chattr", "+T", self.run], capture_output=True)


def mk_init(ctx, root):
    """Creates `root` and makes it a backup root (`mailkeep init`): mailkeep stores nothing
    below a root without its marker (issue 20)."""
    os.makedirs(root, mode=0o700)
    allow = ["--allow-root"] if os.geteuid() == 0 else []
    sh([ctx.mk, "init", "--root", root, *allow], env=ctx.env, stdout=subprocess.DEVNULL)


def mailkeep_tool(ctx, name, label, template=None, binary=None, dedup=None):
    root = os.path.join(ctx.run, name)
    md = os.path.join(root, USER)

    def setup():
        mk_init(ctx, root)
        make_maildir(md)
        if template:
            shutil.copyfile(template, os.path.join(root, ".mailkeep", "dedup.sqlite3"))

    argv = [binary or ctx.mk, "deliver", "--root", root, "--user", USER, "--direction", "in", "--rcpt", RCPT,
            "--log", "none"]
    if dedup if dedup is not None else name != "mailkeep":
        argv.append("--dedup")
    return dict(name=name, label=label, dir=root, maildir=md, setup=setup, argv=lambda lst: argv, once=False)


def peer_tools(ctx):
    w = ctx.work
    tools = []

    def simple(name, label, argv, setup_extra=None, once=False):
        md = os.path.join(ctx.run, name)

        def setup():
            make_maildir(md)
            if setup_extra:
                setup_extra(md)

        tools.append(dict(name=name, label=label, dir=md, maildir=md, setup=setup,
                          argv=lambda lst, a=argv, m=md: a(m, lst), once=once))

    simple("safecat", "safecat", lambda md, l: ["safecat", f"{md}/tmp", f"{md}/new"])
    simple("mdeliver", "mblaze mdeliver", lambda md, l: ["mdeliver", md])

    def procmailrc(md):
        with open(f"{w}/procmailrc", "w") as f:
            f.write(f"LOGFILE=/dev/null\nDEFAULT={md}/\n")
        os.chmod(f"{w}/procmailrc", 0o600)

    simple("procmail", "procmail", lambda md, l: ["procmail", "-m", f"{w}/procmailrc"], procmailrc)

    def mailfilter(md):
        with open(f"{w}/mailfilter", "w") as f:
            f.write(f'to "{md}/"\n')
        os.chmod(f"{w}/mailfilter", 0o600)

    simple("maildrop", "maildrop", lambda md, l: ["maildrop", f"{w}/mailfilter"], mailfilter)

    def dovecot_conf(md):
        os.makedirs(f"{w}/dovecot-run", exist_ok=True)
        with open(f"{w}/dovecot.conf", "w") as f:
            f.write("postmaster_address = postmaster@example.org\nlog_path = /dev/null\n"
                    f"ssl = no\nbase_dir = {w}/dovecot-run\nmail_location = maildir:{md}\n")

    simple("dovecot-lda", "dovecot-lda", lambda md, l: [
        "/usr/lib/dovecot/dovecot-lda", "-c", f"{w}/dovecot.conf", "-o", f"mail_location=maildir:{md}",
        "-f", SENDER, "-a", RCPT], dovecot_conf)
    simple("getmail", "getmail_maildir", lambda md, l: ["getmail_maildir", f"{md}/"])

    def fdm_conf(md):
        with open(f"{w}/fdm.conf", "w") as f:
            f.write(f'set lock-file "{w}/fdm.lock"\naccount "stdin" stdin\n'
                    f'action "md" maildir "{md}"\nmatch all action "md"\n')
        os.chmod(f"{w}/fdm.conf", 0o600)

    simple("fdm", "fdm", lambda md, l: ["fdm", "-q", "-a", "stdin", "-f", f"{w}/fdm.conf", "fetch"], fdm_conf)
    fl = os.path.join(ctx.bin, "floor")
    simple("floor-proc", "floor, one process per message", lambda md, l: [fl, "one", md])
    simple("floor-proc-nodirsync", "floor, one process per message, no fsync of new/ (as safecat)",
           lambda md, l: [fl, "one", md, "nodirsync"])
    simple("floor-proc-nosync", "floor, one process per message, no fsync", lambda md, l: [fl, "one", md, "nosync"])
    simple("floor-inproc", "floor, in-process", lambda md, l: [fl, "files", md, l], once=True)
    simple("floor-inproc-nosync", "floor, in-process, no fsync", lambda md, l: [fl, "files", md, l, "nosync"],
           once=True)
    simple("exec-only", "fork+exec of /bin/true (no delivery)", lambda md, l: ["/bin/true"])
    fld = os.path.join(ctx.bin, "floor-dedup")
    if os.path.exists(fld):
        # The store beside the maildir's folders, in a new store per round like mailkeep's first row.
        def store(md):
            os.makedirs(os.path.join(md, ".mailkeep"))

        simple("floor-proc-dedup", "floor, one process per message, with `--dedup`'s SQLite claim and commit",
               lambda md, l: [fld, "one", md, f"{md}/.mailkeep/dedup.sqlite3"], store)
        simple("floor-proc-dedup-lookup", "floor, one process per message, with an SQLite lookup only",
               lambda md, l: [fld, "one", md, f"{md}/.mailkeep/dedup.sqlite3", "lookup"], store)
    return tools


def dedup_template(ctx, keys):
    """ROOT/.mailkeep/dedup.sqlite3 as mailkeep creates it, holding `keys` committed keys
    (recent, spread over 200 users and two folders, alice's INBOX among them)."""
    path = os.path.join(ctx.work, f"dedup-v2-{keys}.sqlite3")
    if os.path.exists(path):
        return path
    log(f"pre-filling a dedup store with {keys} keys")
    tmp = path + ".part"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)
    db = sqlite3.connect(tmp)
    db.execute("PRAGMA journal_mode=WAL")
    # The schema of src/dedup.rs (Store::open).
    db.executescript("""
        CREATE TABLE IF NOT EXISTS seen (
            user TEXT NOT NULL, folder TEXT NOT NULL, msgid TEXT NOT NULL, body BLOB NOT NULL,
            committed INTEGER NOT NULL, file TEXT, owner_pid INTEGER NOT NULL,
            at INTEGER NOT NULL,
            PRIMARY KEY (user, folder, msgid, body)) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
        PRAGMA user_version = 2;""")
    rng = random.Random(keys)
    now = int(time.time())
    users = [USER] + [f"user{i:03d}" for i in range(199)]

    def rows():
        for i in range(keys):
            at = now - rng.randrange(0, 7 * 86400)
            user = users[i % len(users)]
            folder = "INBOX" if i % 3 else "Sent"
            msgid = f"{rng.getrandbits(64):016x}.{i}@mail{rng.randrange(50)}.example.net"
            file = f"{at}.M{rng.randrange(10**6)}P{rng.randrange(1, 10**5)}Q1.relay,S={rng.randrange(2000, 40000)}"
            yield (user, folder, msgid, rng.randbytes(32), 1, file, rng.randrange(1, 10**5), at)

    db.executemany("INSERT INTO seen VALUES (?,?,?,?,?,?,?,?)", rows())
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)
    os.rename(tmp, path)
    return path


# ---------------------------------------------------------------------------------------
# Phase 1: one process per message


def drive(ctx, tool, listfile, outdir):
    lst = listfile
    if tool["once"]:
        lst = os.path.join(ctx.work, "once.list")
        with open(lst, "w") as f:
            f.write("/dev/null\n")
    out = subprocess.run([os.path.join(ctx.bin, "drive"), lst, outdir, "--", *tool["argv"](listfile)],
                         env=ctx.env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def split_list(ctx, listfile, blocks):
    """Writes the corpus list as `blocks` consecutive lists; returns their paths."""
    with open(listfile) as f:
        paths = f.read().split()
    size = -(-len(paths) // blocks)
    out = []
    for k in range(0, len(paths), size):
        name = os.path.join(ctx.work, f"block-{len(out)}.list")
        with open(name, "w") as f:
            f.write("\n".join(paths[k:k + size]) + "\n")
        out.append(name)
    return out


def add_block(total, m):
    """Adds one block's drive() result to a round's running total."""
    if not total:
        return dict(m)
    for k in ("messages", "failures", "wall_s", "user_s", "sys_s"):
        total[k] += m[k]
    total["max_rss_kb"] = max(total["max_rss_kb"], m["max_rss_kb"])
    total["first_failure_status"] = total["first_failure_status"] or m["first_failure_status"]
    return total


def per_message(ctx, tools, corpus, rounds, blocks, results):
    """Each round delivers the whole corpus with every tool, but in `blocks` slices taken in
    turn: slice 1 by every tool, then slice 2, and so on, the tools' order rotating. This
    host's speed drifts by up to 2x within a minute (a VM on a shared host); a tool that ran
    its 2 000 messages in one go got whatever phase it landed in, and the ratio of two tools
    in one round swung from 0.75 to 1.24. Taken in turns, every tool sees the same mix."""
    listfile = os.path.join(corpus, "list")
    with open(os.path.join(corpus, "msgids")) as f:
        expected = f.read().split()
    slices = split_list(ctx, listfile, blocks)
    runs = {t["name"]: [] for t in tools}
    for r in range(rounds):
        settle(ctx)
        for tool in tools:
            rmtree(tool["dir"])
            tool["setup"]()
        totals = {t["name"]: {} for t in tools}
        load = os.getloadavg()[0]
        for k, lst in enumerate(slices):
            for tool in round_order(tools, r * len(slices) + k):
                sync()
                time.sleep(0.2)
                totals[tool["name"]] = add_block(totals[tool["name"]], drive(ctx, tool, lst, ctx.work))
        for tool in tools:
            m = totals[tool["name"]]
            stored, problem = check(tool["maildir"], expected)
            m.update(round=r + 1, stored=stored, problem=problem, load1=load)
            if m.get("failures"):
                m["problem"] = (problem + "; " if problem else "") + \
                    f"{m['failures']} deliveries failed (first exit {m['first_failure_status']})"
            if tool["name"] == "exec-only":
                m["problem"] = None  # /bin/true stores nothing, on purpose
            runs[tool["name"]].append(m)
            rate = len(expected) / m["wall_s"]
            log(f"round {r + 1}/{rounds} {tool['name']:<22} {rate:8.0f}/s "
                f"cpu {1000 * (m['user_s'] + m['sys_s']) / len(expected):6.3f} ms/msg"
                + (f"  PROBLEM: {m['problem']}" if m["problem"] else ""))
        for tool in tools:  # nothing freed between rounds: see retire()
            retire(ctx, tool["dir"], tool["name"])
    for t in tools:
        results["per_message"][t["name"]] = {"label": t["label"], "runs": runs[t["name"]]}


# ---------------------------------------------------------------------------------------
# Phase 2: fsyncs of one delivery, under strace

STRACE_RE = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")


def count_syncs(trace, maildir):
    out = {"file": 0, "dir": 0, "other": 0, "syncfs": 0, "osync_opens": 0, "other_paths": []}
    for line in trace.splitlines():
        m = STRACE_RE.match(line)
        if not m:
            continue
        call, args = m.group(1), m.group(2)
        if call in ("open", "openat"):
            flags = args.split(", ")[2] if call == "openat" else args.split(", ")[1]
            if "O_SYNC" in flags or "O_DSYNC" in flags:
                out["osync_opens"] += 1
            continue
        if call in ("syncfs", "sync"):
            out["syncfs"] += 1
            continue
        p = re.search(r"<(.*)>", args)
        path = p.group(1) if p else ""
        path = re.sub(r" \(deleted\)$", "", path)
        if os.path.isdir(path):
            out["dir"] += 1
        elif path.startswith(maildir + "/") and path[len(maildir) + 1:].split("/")[0] in ("tmp", "new", "cur"):
            out["file"] += 1
        else:
            out["other"] += 1
            out["other_paths"].append(re.sub(r"\d+", "N", os.path.basename(path)))
    return out


def fsyncs(ctx, tools, corpus, results):
    names = sorted(f for f in os.listdir(corpus) if f.endswith(".eml"))
    sizes = sorted((os.path.getsize(os.path.join(corpus, n)), n) for n in names)
    typical = os.path.join(corpus, sizes[len(sizes) // 2][1])
    warm = os.path.join(corpus, names[0])
    one = os.path.join(ctx.work, "one.list")
    with open(one, "w") as f:
        f.write(typical + "\n")
    for tool in tools:
        if tool["name"] == "exec-only":
            continue
        rmtree(tool["dir"])
        tool["setup"]()
        argv = tool["argv"](one)
        if not tool["once"]:
            with open(warm, "rb") as f:  # first delivery out of the way (folder set-up)
                subprocess.run(argv, stdin=f, env=ctx.env, capture_output=True)
        tr = os.path.join(ctx.work, "strace.out")
        with open(typical if not tool["once"] else "/dev/null", "rb") as f:
            subprocess.run(["strace", "-f", "-qq", "-y", "-e", "signal=none", "-e",
                            "trace=fsync,fdatasync,syncfs,sync,sync_file_range,msync,open,openat", "-o", tr, *argv],
                           stdin=f, env=ctx.env, capture_output=True)
        with open(tr) as f:
            c = count_syncs(f.read(), tool["maildir"])
        c["message_bytes"] = os.path.getsize(typical)
        results["per_message"][tool["name"]]["fsync"] = c
        log(f"fsyncs {tool['name']:<22} file={c['file']} dir={c['dir']} other={c['other']} "
            f"syncfs={c['syncfs']} O_SYNC opens={c['osync_opens']} {c['other_paths']}")
        rmtree(tool["dir"])


# ---------------------------------------------------------------------------------------
# Phase 3: start-up CPU before the first read of stdin


def startup(ctx, results, samples):
    root = os.path.join(ctx.run, "startup")
    rmtree(root)
    mk_init(ctx, root)
    make_maildir(os.path.join(root, "floor"))
    probes = {
        "mailkeep deliver": [ctx.mk, "deliver", "--root", root, "--user", USER, "--direction", "in",
                             "--rcpt", RCPT, "--log", "none"],
        "mailkeep deliver --dedup": [ctx.mk, "deliver", "--root", root, "--user", USER, "--direction", "in",
                                     "--rcpt", RCPT, "--log", "none", "--dedup"],
        "floor one (C)": [os.path.join(ctx.bin, "floor"), "one", os.path.join(root, "floor")],
        "cat (C, libc)": ["cat"],
        "safecat": ["safecat", os.path.join(root, "floor", "tmp"), os.path.join(root, "floor", "new")],
    }
    for vlabel, vbin in getattr(ctx, "variants", []):
        probes[f"mailkeep deliver, {vlabel}"] = [vbin, *probes["mailkeep deliver"][1:]]
    out = {}
    for name, argv in probes.items():
        vals = []
        for _ in range(samples):
            p = subprocess.run([os.path.join(ctx.bin, "drive"), "-s", *argv], env=ctx.env,
                               capture_output=True, text=True)
            r = json.loads(p.stdout)
            if r["blocked_in_read"]:
                vals.append(r["cpu_ns"] / 1e6)
        out[name] = {"samples_ms": vals, "median_ms": statistics.median(vals) if vals else None}
        log(f"start-up {name:<26} median {out[name]['median_ms']} ms CPU before read(0) ({len(vals)} samples)")
    results["startup"] = out
    rmtree(root)


# ---------------------------------------------------------------------------------------
# Phase 4: bulk, one mbox


def bulk_tools(ctx, mbox):
    fl = os.path.join(ctx.bin, "floor")
    r = ctx.run
    root = os.path.join(r, "replay")
    return [
        dict(name="mailkeep-replay", label="mailkeep replay", dir=root, maildir=os.path.join(root, USER),
             setup=lambda: mk_init(ctx, root), stdin=None,
             argv=[ctx.mk, "replay", "--root", root, "--user", USER, "--domain", "example.org", "--log", "none", mbox]),
        dict(name="mb2md", label="mb2md (no fsync)", dir=f"{r}/mb2md", maildir=f"{r}/mb2md", setup=lambda: None,
             stdin=None, argv=["mb2md", "-s", mbox, "-d", f"{r}/mb2md"]),
        dict(name="mdeliver-M", label="mblaze mdeliver -M", dir=f"{r}/mdeliver-M", maildir=f"{r}/mdeliver-M",
             setup=lambda: make_maildir(f"{r}/mdeliver-M"), stdin=mbox, argv=["mdeliver", "-M", f"{r}/mdeliver-M"]),
        dict(name="python-mailbox", label="Python mailbox (file fsync)", dir=f"{r}/py", maildir=f"{r}/py",
             setup=lambda: make_maildir(f"{r}/py"), stdin=None,
             argv=["/usr/bin/python3", os.path.join(ctx.bin, "py_mailbox.py"), mbox, f"{r}/py"]),
        dict(name="floor-mbox-batch", label="floor, in-process, batches: syncfs + one dir fsync (mmap)", dir=f"{r}/flb",
             maildir=f"{r}/flb", setup=lambda: make_maildir(f"{r}/flb"), stdin=None,
             argv=[fl, "mbox", f"{r}/flb", mbox, "batch"]),
        dict(name="floor-mbox-nosync", label="floor, in-process, no fsync (mmap)", dir=f"{r}/fln", maildir=f"{r}/fln",
             setup=lambda: make_maildir(f"{r}/fln"), stdin=None, argv=[fl, "mbox", f"{r}/fln", mbox, "nosync"]),
    ]


def gnu_time(ctx, argv, stdin, limit_nofile=None):
    tv = os.path.join(ctx.work, "time.out")

    def pre():
        if limit_nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit_nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    with open(stdin or "/dev/null", "rb") as f:
        t = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-v", "-o", tv, *argv], stdin=f, env=ctx.env, capture_output=True,
                           preexec_fn=pre)
        wall = time.monotonic() - t
    with open(tv) as f:
        tv_text = f.read()

    def field(name):
        m = re.search(rf"{re.escape(name)}: ([\d.]+)", tv_text)
        return float(m.group(1)) if m else None

    return dict(status=p.returncode, wall_s=wall, user_s=field("User time (seconds)"),
                sys_s=field("System time (seconds)"), max_rss_kb=field("Maximum resident set size (kbytes)"),
                stderr_tail=p.stderr.decode(errors="replace")[-600:])


def bulk(ctx, mbox, rounds, results):
    with open(mbox + ".msgids") as f:
        expected = f.read().split()
    tools = bulk_tools(ctx, mbox)
    for i, (vlabel, vbin) in enumerate(getattr(ctx, "variants", [])):
        root = os.path.join(ctx.run, f"replay-variant{i}")
        tools.append(dict(name=f"replay-variant{i}", label=f"mailkeep replay, {vlabel}", dir=root,
                          maildir=os.path.join(root, USER), setup=lambda root=root: mk_init(ctx, root),
                          stdin=None, argv=[vbin, *tools[0]["argv"][1:3], root, *tools[0]["argv"][4:]]))
    runs = {t["name"]: [] for t in tools}
    for r in range(rounds):
        order = round_order(tools, r)
        settle(ctx)
        for tool in order:
            rmtree(tool["dir"])
            tool["setup"]()
            sync()
            time.sleep(1)
            load = os.getloadavg()[0]
            m = gnu_time(ctx, tool["argv"], tool["stdin"])
            m["sync_after_s"] = sync()
            if r == 0:
                stored, problem = check(tool["maildir"], expected)
            else:  # the Message-IDs were checked in round 1; count only
                stored = count_files(tool["maildir"])
                problem = None if stored == len(expected) else f"{stored} files for {len(expected)} messages"
            if m["status"] != 0:
                problem = (problem + "; " if problem else "") + f"exit {m['status']}: {m['stderr_tail']}"
            m.update(round=r + 1, stored=stored, problem=problem, load1=load)
            runs[tool["name"]].append(m)
            log(f"bulk round {r + 1}/{rounds} {tool['name']:<18} {len(expected) / m['wall_s']:8.0f}/s "
                f"(+sync {m['sync_after_s']:.2f}s) rss {m['max_rss_kb']} KB"
                + (f"  PROBLEM: {problem}" if problem else ""))
        for tool in order:  # nothing freed between rounds: see retire()
            retire(ctx, tool["dir"], tool["name"])
    results["bulk"] = {"messages": len(expected), "mbox_bytes": os.path.getsize(mbox),
                       "tools": {t["name"]: {"label": t["label"], "runs": runs[t["name"]]} for t in tools}}
    # Debian's default soft limit on open files is 1024: does replay work under it?
    results["bulk"]["nofile_1024"] = {}
    for t in tools:
        if t["name"] != "mailkeep-replay" and not t["name"].startswith("replay-variant"):
            continue
        rmtree(t["dir"])
        t["setup"]()
        m = gnu_time(ctx, t["argv"], None, limit_nofile=1024)
        stored, problem = check(t["maildir"], expected)
        results["bulk"]["nofile_1024"][t["name"]] = {"label": t["label"], "status": m["status"], "stored": stored,
                                                     "problem": problem, "stderr_tail": m["stderr_tail"]}
        log(f"{t['label']} with ulimit -n 1024: exit {m['status']}, stored {stored}/{len(expected)}")
        rmtree(t["dir"])


def durability(ctx, results):
    """Under strace, checks that `mailkeep replay` links no message into new/ before a sync
    (syncfs, or fsync of that file) that came after the file's last write; 2 500 messages,
    so more than one batch."""
    mbox = os.path.join(ctx.work, "durability-2500.mbox")
    if not os.path.exists(mbox + ".msgids"):
        sh(["/usr/bin/python3", os.path.join(HERE, "corpus.py"), "mbox", mbox, "2500", "--seed", "13", "--large", "0"])
    root = os.path.join(ctx.run, "durability")
    rmtree(root)
    mk_init(ctx, root)
    tr = os.path.join(ctx.work, "durability.strace")
    subprocess.run(["strace", "-f", "-qq", "-y", "-e", "signal=none", "-e",
                    "trace=write,writev,pwrite64,fsync,fdatasync,syncfs,sync,link,linkat,rename,renameat,renameat2",
                    "-o", tr, ctx.mk, "replay", "--root", root, "--user", USER, "--domain", "example.org",
                    "--log", "none", mbox], env=ctx.env, capture_output=True, check=True)
    last_write, fsynced = {}, {}
    last_syncfs = -1
    linked = unsynced = syncfs = dir_fsyncs = 0
    fdpath = re.compile(r"^\d+\s+(\w+)\((\d+)<([^>]*)>(.*)$")
    with open(tr) as f:
        for i, line in enumerate(f):
            m = fdpath.match(line)
            if not m:
                continue
            call, path, rest = m.group(1), m.group(3), m.group(4)
            if call in ("write", "writev", "pwrite64"):
                last_write[path] = i
            elif call in ("fsync", "fdatasync"):
                if path.endswith("/new"):
                    dir_fsyncs += 1
                fsynced[path] = i
            elif call in ("syncfs", "sync"):
                last_syncfs = i
                syncfs += 1
            elif call in ("linkat", "renameat", "renameat2"):
                name = re.match(r', "([^"]*)", \d+<([^>]*)>', rest)
                if not name or not name.group(2).endswith("/new"):
                    continue
                src = f"{path}/{name.group(1)}"
                linked += 1
                if max(last_syncfs, fsynced.get(src, -1)) < last_write.get(src, 0):
                    unsynced += 1
    results["bulk"]["durability"] = {"messages": 2500, "linked": linked, "unsynced": unsynced, "syncfs": syncfs,
                                     "dir_fsyncs": dir_fsyncs}
    log(f"durability: {linked} links into new/, {unsynced} before a covering sync, {syncfs} syncfs, "
        f"{dir_fsyncs} fsyncs of new/")
    rmtree(root)


# ---------------------------------------------------------------------------------------


def journal(source_fstype):
    """"yes"/"no" for ext3/ext4 (a jbd2 journal shows in /proc/fs/jbd2/DEV-N), else ""."""
    parts = source_fstype.split()
    if len(parts) != 2 or parts[1] not in ("ext3", "ext4"):
        return ""
    dev = os.path.basename(parts[0])
    try:
        return "yes" if any(e.startswith(dev + "-") for e in os.listdir("/proc/fs/jbd2")) else "no"
    except OSError:
        return "no"


def meta(ctx, a):
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, env=ctx.env).stdout.strip()
        except OSError:
            return ""

    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pkgs = out(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "safecat", "maildrop", "procmail",
                "dovecot-core", "getmail6", "mblaze", "fdm", "mb2md", "python3.11", "strace"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": out(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "filesystem": out(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", "-T", ctx.work]),
        "journal": journal(out(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", ctx.work])),
        "work": ctx.work,
        "blocks": a.blocks,
        "packages": pkgs.splitlines(),
        "mailkeep": out([ctx.mk, "--version"]),
        "mailkeep_commit": os.environ.get("MAILKEEP_COMMIT", ""),
        "args": vars(a),
        "user": out(["id", "-un"]),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=10,
                    help="slices of the corpus the tools take turns on within a round (see per_message())")
    ap.add_argument("--bulk-messages", type=int, default=100000)
    ap.add_argument("--bulk-rounds", type=int, default=3)
    ap.add_argument("--dedup-keys", default="1000,1000000")
    ap.add_argument("--startup-samples", type=int, default=41)
    ap.add_argument("--settle", type=int, default=65, help="seconds of quiet before each round (see settle())")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=PATH",
                    help="also measure another mailkeep binary (a proposed change), deliver and replay")
    ap.add_argument("--only", default="", help="comma list of per-message tool names (for development)")
    ap.add_argument("--skip", default="", help="comma list of phases to skip: deliver,fsync,startup,bulk")
    a = ap.parse_args()
    ctx = Ctx(a)
    skip = set(filter(None, a.skip.split(",")))
    # Replay keeps its batch's files open; give every tool the same, raised limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    corpus = os.path.join(ctx.work, f"corpus-{a.messages}")
    if not os.path.exists(os.path.join(corpus, "msgids")):
        log(f"building the corpus: {a.messages} messages")
        sh(["/usr/bin/python3", os.path.join(HERE, "corpus.py"), "dir", corpus, str(a.messages)])
    mbox = os.path.join(ctx.work, f"bulk-{a.bulk_messages}.mbox")
    if "bulk" not in skip and not os.path.exists(mbox + ".msgids"):
        log(f"building the mbox: {a.bulk_messages} messages")
        sh(["/usr/bin/python3", os.path.join(HERE, "corpus.py"), "mbox", mbox, str(a.bulk_messages),
            "--seed", "11", "--large", "0.3"])

    results = {"meta": meta(ctx, a), "per_message": {}, "corpus": {}}
    sizes = [os.path.getsize(os.path.join(corpus, n)) for n in os.listdir(corpus) if n.endswith(".eml")]
    results["corpus"] = {"messages": len(sizes), "bytes": sum(sizes), "median_bytes": int(statistics.median(sizes)),
                         "over_200k": sum(s > 200_000 for s in sizes), "max_bytes": max(sizes)}

    tools = [mailkeep_tool(ctx, "mailkeep", "mailkeep deliver")]
    tools.append(mailkeep_tool(ctx, "mailkeep-dedup", "mailkeep deliver --dedup, new store"))
    for k in [int(x) for x in a.dedup_keys.split(",") if x]:
        tools.append(mailkeep_tool(ctx, f"mailkeep-dedup-{k}", f"mailkeep deliver --dedup, {k:,} keys",
                                   dedup_template(ctx, k)))
    variants = [v.split("=", 1) for v in a.variant]
    big = max([int(x) for x in a.dedup_keys.split(",") if x] or [0])
    for i, (vlabel, vbin) in enumerate(variants):
        tools.append(mailkeep_tool(ctx, f"variant{i}", f"mailkeep deliver, {vlabel}", binary=vbin, dedup=False))
        if big:
            tools.append(mailkeep_tool(ctx, f"variant{i}-dedup", f"mailkeep deliver --dedup, {big:,} keys, {vlabel}",
                                       dedup_template(ctx, big), binary=vbin, dedup=True))
    ctx.variants = variants
    tools += peer_tools(ctx)
    if a.only:
        keep = set(a.only.split(","))
        tools = [t for t in tools if t["name"] in keep]

    results["load_before"] = os.getloadavg()
    if "deliver" not in skip:
        per_message(ctx, tools, corpus, a.rounds, a.blocks, results)
    else:
        for t in tools:
            results["per_message"][t["name"]] = {"label": t["label"], "runs": []}
    if "fsync" not in skip:
        fsyncs(ctx, tools, corpus, results)
    if "startup" not in skip:
        startup(ctx, results, a.startup_samples)
    if "bulk" not in skip:
        bulk(ctx, mbox, a.bulk_rounds, results)
        durability(ctx, results)
    results["load_after"] = os.getloadavg()
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)
    empty_retired(ctx)
    problems = [f"{n}: {r['problem']}" for n, t in results["per_message"].items() for r in t["runs"] if r["problem"]]
    problems += [f"bulk {n}: {r['problem']}" for n, t in results.get("bulk", {}).get("tools", {}).items()
                 for r in t["runs"] if r["problem"]]
    if results.get("bulk", {}).get("durability", {}).get("unsynced"):
        problems.append("replay linked a message into new/ before syncing it")
    for p in problems:
        log(f"PROBLEM {p}")
    log(f"results in {a.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
