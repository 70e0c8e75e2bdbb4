#!/usr/bin/python3
"""The scale curve of docs/BENCHMARKS.md: wall time and peak RSS of every admin command on
generated backups of 10 000, 100 000 and 1 000 000 messages (and 10 000 users for status).

    scale.py --bin MAILKEEP --work DIR [--sizes 10000,100000,1000000] [--cold] [--docs DIR]

A backup is generated once per size and kept under WORK (reused by later runs while the
generator's version is unchanged). It is written directly, file by file: about 30 times
faster than `mailkeep replay` of an mbox of the same size (both rates are in the results).
What a generated backup looks like:
  * an initialised root (`mailkeep init`), USERS users, each with INBOX and .Sent (the
    maildirfolder file and both subscription lists, so that `check` finds it clean);
  * 75 % of the messages in INBOX, 25 % in .Sent; 20 % of them moved to cur/ with flags
    (`:2,S`, `:2,RS`, `:2,FS`), the rest in new/; Maildir names as the writer makes them
    (`<secs>.M<usec>P<pid>Q<n>.<host>,S=<size>`) with mtimes spread over ten years;
  * sizes log-uniform 2 to 20 KB, 1 % 100 KB to 1 MB. Only the first 4 KiB of each file
    (headers and the start of the body) are written, the rest is a hole (ftruncate): the
    sizes are real for `stat` and `,S=`, `check` reads the first 4 KiB only, and a million
    messages take 4 GB of disk, not 12. A command that reads whole messages (export) reads
    zeros from the holes: cheaper than real blocks when the cache is cold.
Commands the binary does not have (`mailkeep --help`) are skipped with a note, so one script
serves before and after the commands of issues 21 and 22 land. The argument lists are in
COMMANDS below; a command whose --help lacks one of them is skipped with a note too.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

GEN_VERSION = 1
HEAD_REAL = 4096
YEARS = 10
NOW = int(time.time())
FLAGS = [":2,S", ":2,RS", ":2,FS", ":2,S"]

# Each command: argv after the binary ({root}, {user}, {out}, {mbox} are filled in); whether it
# changes the backup (then it runs on a fresh hard-linked copy, `cp -al`, made outside the
# timing: every seal there is a first, full one); and a command run untimed on that copy first.
COMMANDS = [
    ("check", ["check", "--root", "{root}"], False, None),
    ("status", ["status", "--root", "{root}"], False, None),
    ("seal", ["seal", "--root", "{root}"], True, None),
    ("seal (incremental)", ["seal", "--root", "{root}"], True, ["seal", "--root", "{root}"]),
    # export and erase take one user: u00000, 1 % of the messages (100 users).
    ("export (1 user)", ["export", "--root", "{root}", "--user", "{user}", "--out", "{out}"], False, None),
    ("expire", ["expire", "--root", "{root}", "--older-than", "5y"], True, None),
    ("erase (1 user)", ["erase", "--root", "{root}", "--user", "{user}", "--before", "2021-01-01",
                        "--reason", "scale benchmark"], True, None),
    ("replay", ["replay", "--root", "{root}", "--user", "{user}", "--domain", "example.org", "--log", "none", "{mbox}"],
     True, None),
]


def log(*a):
    print("scale:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the generated backup

WORDS = ("the of and to in is that for it as with was on be by at this are or an have from not "
         "invoice meeting report quarter budget shipment order account customer delivery schedule "
         "project review contract attached please regards thanks tomorrow Monday").split()


def body_pool(rng):
    lines = []
    for _ in range(4000):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize())
    return ("\n".join(lines) + "\n").encode()


def message_size(rng):
    if rng.random() < 0.01:
        return int(math.exp(rng.uniform(math.log(100e3), math.log(1e6))))
    return int(math.exp(rng.uniform(math.log(2e3), math.log(20e3))))


def head_of(i, user, date, size, rng, pool):
    """The first min(size, 4 KiB) bytes of message i: real headers, then body text."""
    d = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(date))
    head = (f"Return-Path: <sender{i % 997}@example.com>\n"
            f"Received: from mx1.example.com (mx1.example.com [192.0.2.{i % 250 + 1}])\n"
            f"\tby relay.example.org with esmtps (Exim 4.96) id 1r{i:010x}-0001\n"
            f"\tfor {user}@example.org; {d}\n"
            f"From: Sender {i % 997} <sender{i % 997}@example.com>\nTo: {user}@example.org\n"
            f"Subject: Report {i} for {user}\nDate: {d}\n"
            f"Message-ID: <{date:x}.{i:08d}.scale@example.com>\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n\n").encode()
    want = min(size, HEAD_REAL)
    start = rng.randrange(0, len(pool) - HEAD_REAL)
    data = head + pool[start:start + max(want - len(head), 0)]
    return data[:want]


def make_maildir(udir):
    for folder in ("", ".Sent"):
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(udir, folder, sub), mode=0o700, exist_ok=True)
    for name, text in ((".Sent/maildirfolder", ""), ("subscriptions", "Sent\n"),
                       ("courierimapsubscribed", "INBOX.Sent\n")):
        with open(os.path.join(udir, name), "w") as f:
            f.write(text)


def generate(binary, root, messages, users, seed=24):
    """Writes the backup; returns (messages, apparent bytes, seconds)."""
    t0 = time.monotonic()
    os.makedirs(root)
    subprocess.run([binary, "init", "--root", root] + root_flag(binary, "init"), check=True,
                   stdout=subprocess.DEVNULL)
    rng = random.Random(seed)
    pool = body_pool(rng)
    names = [f"u{k:05d}" for k in range(users)]
    dirs = []
    for u in names:
        udir = os.path.join(root, u)
        make_maildir(udir)
        dirs.append({(f, s): os.path.join(udir, f, s) + "/" for f in ("", ".Sent") for s in ("new", "cur")})
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    total = 0
    span = YEARS * 365 * 86400
    for i in range(messages):
        k = i % users
        folder = ".Sent" if rng.random() < 0.25 else ""
        in_cur = rng.random() < 0.20
        size = message_size(rng)
        date = NOW - 86400 - int(span * (i / messages)) - rng.randrange(0, 3600)
        name = f"{date}.M{rng.randrange(1000000)}P{rng.randrange(2, 99999)}Q{i}.scalegen,S={size}"
        if in_cur:
            name += FLAGS[i % len(FLAGS)]
        fd = os.open(dirs[k][(folder, "cur" if in_cur else "new")] + name, flags, 0o600)
        try:
            os.write(fd, head_of(i, names[k], date, size, rng, pool))
            if size > HEAD_REAL:
                os.ftruncate(fd, size)
            os.utime(fd, (date, date))
        finally:
            os.close(fd)
        total += size
        if i and i % 100000 == 0:
            log(f"  {i} of {messages} messages written")
    os.sync()
    return messages, total, time.monotonic() - t0


def cached_backup(binary, work, messages, users):
    """The generated backup for this size: made once, then reused (its `complete` file)."""
    key = f"m{messages}-u{users}-v{GEN_VERSION}"
    base = os.path.join(work, key)
    done = os.path.join(base, "complete")
    if os.path.exists(done):
        with open(done) as f:
            return os.path.join(base, "root"), json.load(f)
    if os.path.exists(base):
        shutil.rmtree(base)
    need = messages * 4600 + users * 60000  # 4 KiB a message and its inode; 6 directories a user
    free = shutil.disk_usage(work).free
    if free < 2 * need:
        return None, {"skipped": f"{free / 1e9:.1f} GB free in {work}, {need / 1e9:.1f} GB needed (twice that kept free)"}
    os.makedirs(base)
    log(f"generating {messages} messages over {users} users in {base}")
    n, total, secs = generate(binary, os.path.join(base, "root"), messages, users)
    meta = {"messages": n, "users": users, "bytes": total, "gen_seconds": round(secs, 2),
            "disk_bytes": du(os.path.join(base, "root"))}
    with open(done, "w") as f:
        json.dump(meta, f)
    log(f"  {n} messages, {total / 1e9:.2f} GB apparent, {meta['disk_bytes'] / 1e9:.2f} GB on disk, {secs:.1f} s")
    return os.path.join(base, "root"), meta


def remove_tree(path):
    """rm -rf: several times faster than shutil.rmtree on 100 000 files."""
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=True)


def du(path):
    out = subprocess.run(["du", "-s", "--block-size=1", path], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0


def cached_mbox(work, messages):
    """An mbox of `messages` messages (bench/corpus.py, 0.2 % large) for replay."""
    path = os.path.join(work, f"mbox-{messages}.mbox")
    if not os.path.exists(path + ".msgids"):
        log(f"writing an mbox of {messages} messages for replay")
        corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus.py")
        subprocess.run([sys.executable, corpus, "mbox", path, str(messages), "--large", "0.2"], check=True)
    return path


# ---------------------------------------------------------------- measuring

def helps(binary):
    """The commands this binary has, from `mailkeep --help`."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    section = out.split("Commands:", 1)[-1].split("Options:", 1)[0]
    return {m.group(1) for m in re.finditer(r"^  ([a-z][a-z-]*)\s", section, re.M)}


def command_help(binary, cmd):
    return subprocess.run([binary, cmd, "--help"], capture_output=True, text=True).stdout


def root_flag(binary, cmd):
    """`--allow-root` where the command has it and we are root."""
    return ["--allow-root"] if os.geteuid() == 0 and "--allow-root" in command_help(binary, cmd) else []


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(argv, cold):
    """(wall seconds, peak RSS KiB, user+sys CPU seconds, exit status) of one run."""
    if cold:
        drop_caches()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", "-o", tf.name] + argv,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall, rss, usr, sys_ = tf.read().split()[-4:]
    return float(wall), int(rss), float(usr) + float(sys_), p.returncode, p.stderr.strip().splitlines()[-1:]


def measure(binary, name, template, destructive, prep, root, meta, work, args, have):
    cmd = template[0]
    if cmd not in have:
        return {"skipped": f"this mailkeep has no `{cmd}` command"}
    text = command_help(binary, cmd)
    missing = [a for a in template if a.startswith("--") and a not in text]
    if missing:
        return {"skipped": f"`{cmd} --help` lists no {', '.join(missing)}: adjust COMMANDS in bench/scale.py"}
    big = meta["messages"] > 100000
    # replay is 1 to 2 thousand messages a second (an fsync each): one run.
    measured = 1 if big or cmd == "replay" else args.repeats
    # Warm: one unmeasured run first (not for replay above 100 000: its mbox was just read).
    warmup = 0 if args.cold or (cmd == "replay" and big) else 1
    user, out = "u00000", os.path.join(work, "out")
    runs = []
    for r in range(warmup + measured):
        target, mbox = root, ""
        remove_tree(out)
        if cmd == "replay":
            target = os.path.join(work, "replay-root")
            remove_tree(target)
            os.makedirs(target)
            subprocess.run([binary, "init", "--root", target] + root_flag(binary, "init"), check=True,
                           stdout=subprocess.DEVNULL)
            mbox = cached_mbox(work, meta["messages"])
        elif destructive:
            target = os.path.join(work, "copy-root")
            remove_tree(target)
            subprocess.run(["cp", "-al", root, target], check=True)
            # The root's own files (audit log, seals) are copied, not linked: a command that
            # appends to one must not change the kept backup through the link.
            remove_tree(os.path.join(target, ".mailkeep"))
            subprocess.run(["cp", "-a", os.path.join(root, ".mailkeep"), target], check=True)

        def argv(t):
            v = [binary] + [a.format(root=target, user=user, out=out, mbox=mbox) for a in t]
            v[2:2] = root_flag(binary, t[0])
            return v
        if prep:
            subprocess.run(argv(prep), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res = timed(argv(template), args.cold)
        if r >= warmup:
            runs.append(res)
        if target != root:
            remove_tree(target)
    remove_tree(out)
    runs.sort()
    wall, rss, cpu, code, err = runs[len(runs) // 2]
    return {"wall": wall, "rss_kib": rss, "cpu": cpu, "exit": code, "stderr": err,
            "runs": [x[0] for x in runs], "cache": "cold" if args.cold else "warm"}


# ---------------------------------------------------------------- the report

def table(results):
    sets = results["sets"]
    cols = [s["label"] for s in sets]
    lines = ["| command | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    names = []
    for s in sets:
        for n in s["commands"]:
            if n not in names:
                names.append(n)
    notes = []
    for n in names:
        cells = []
        for s in sets:
            r = s["commands"].get(n)
            if r is None:
                cells.append("")
            elif "skipped" in r:
                cells.append("–")
                if f"{n}: {r['skipped']}" not in notes:
                    notes.append(f"{n}: {r['skipped']}")
            else:
                rate = s["messages"] / r["wall"] if r["wall"] > 0 else float("inf")
                cell = f"{r['wall']:.2f} s, {r['rss_kib'] / 1024:.1f} MB"
                if n not in ("status",):
                    cell += f" ({rate / 1000:.0f} k msg/s)" if rate != float("inf") else ""
                if r["exit"] not in (0, 1):
                    cell += f" exit {r['exit']}"
                cells.append(cell)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    gen = " | ".join(f"{s['gen_seconds']:.0f} s ({s['messages'] / s['gen_seconds'] / 1000:.0f} k msg/s)"
                     for s in sets)
    lines.append(f"| (generating the backup) | {gen} |")
    return "\n".join(lines), notes


def plot(all_results, path):
    """Wall time and peak RSS against messages; warm runs solid, cold runs dashed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: python3-matplotlib is not installed (apt-get install python3-matplotlib)"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    xs_all = []
    for results in all_results:
        style = "--" if results["cache"] == "cold" else "-"
        sets = [s for s in results["sets"] if s["users"] <= 1000]
        names = []
        for s in sets:
            names += [n for n, r in s["commands"].items() if "wall" in r and n not in names]
        for n in names:
            pts = [(s["messages"], s["commands"][n]) for s in sets if "wall" in s["commands"].get(n, {})]
            xs = [p[0] for p in pts]
            xs_all += xs
            label = f"{n} ({results['cache']})"
            ax1.plot(xs, [max(p[1]["wall"], 0.005) for p in pts], ls=style, marker="o", label=label)
            ax2.plot(xs, [p[1]["rss_kib"] / 1024 for p in pts], ls=style, marker="o", label=label)
    if xs_all:
        lo, hi = min(xs_all), max(xs_all)
        ax1.plot([lo, hi], [0.1, 0.1 * hi / lo], ls=":", color="grey", label="linear")
        ax1.axhline(60, ls="--", color="red", lw=0.8)
        ax1.text(lo, 66, "goal: check of 1 M under 60 s", color="red", fontsize=8)
    for ax, title in ((ax1, "wall time (s)"), (ax2, "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("messages in the backup (100 users)")
        ax.set_title(title)
        ax.grid(True, which="both", lw=0.3)
    ax1.set_yscale("log")
    ax2.set_ylim(bottom=0)
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    first = all_results[0]
    fig.suptitle(f"mailkeep scale curve (build {first['commit']}, {first['date']}, 2-core VM)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return None


def section(all_results, plot_note):
    out = ["<!-- scale:begin (written by bench/scale.sh; edits between these markers are lost) -->",
           "## The scale curve",
           "",
           "```sh",
           "sudo bench/scale.sh          # this section and docs/scale.png; also the last part of bench/run.sh's full run",
           "sudo bench/scale.sh --cold -- --replay-max 0   # the page cache dropped before every measured run: its own table",
           "```",
           "",
           "The backups are made the first time (2.5 minutes, 5 GB below /var/tmp/mailkeep-scale) and "
           "kept for later runs; a run on them takes about 5 minutes (the cold one without replay: 3). "
           "Each cell: wall time, peak RSS and messages per second; the median of 3 runs up to 100 000 "
           "messages, one run above. The machine is a 2-core VM shared with other jobs: single runs "
           "carry its noise (the load average is given).",
           ""]
    for results in all_results:
        tab, notes = table(results)
        how = ("caches dropped (`echo 3 > /proc/sys/vm/drop_caches`) before every measured run"
               if results["cache"] == "cold" else "one unmeasured run first")
        out += [f"### {results['cache'].capitalize()} page cache",
                "",
                f"Measured {results['date']} by `{results['command']}`, build {results['commit']}, {how}; "
                f"load average at the start {results['load']}.",
                "",
                tab,
                ""]
        for n in notes:
            out.append(f"* skipped {n}")
        for n in results.get("notes", []):
            out.append(f"* {n}")
        out.append("")
    out.append("Generated backups (bench/scale.py): " + "; ".join(
        f"{s['label']}: {s['messages']} messages, {s['users']} users, {s['bytes'] / 1e9:.2f} GB apparent, "
        f"{s['disk_bytes'] / 1e9:.2f} GB on disk" for s in all_results[0]["sets"]) + ".")
    out.append("")
    out.append(plot_note or "![wall time and peak RSS against the number of messages](scale.png)")
    notes_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "SCALE-NOTES.md")
    if os.path.exists(notes_file):
        out += ["", open(notes_file).read().rstrip("\n")]
    out += ["", "<!-- scale:end -->", ""]
    return "\n".join(out)


def write_docs(work, path):
    """Replaces (or appends) the section in the markdown file `path` with the last warm and
    cold runs' results (WORK/results-warm.json, results-cold.json); scale.png beside it."""
    all_results = []
    for cache in ("warm", "cold"):
        p = os.path.join(work, f"results-{cache}.json")
        if os.path.exists(p):
            with open(p) as f:
                all_results.append(json.load(f))
    docs = os.path.dirname(os.path.abspath(path))
    note = plot(all_results, os.path.join(docs, "scale.png"))
    text = section(all_results, note)
    old = open(path).read() if os.path.exists(path) else ""
    m = re.search(r"<!-- scale:begin.*?<!-- scale:end -->\n?", old, re.S)
    new = old[:m.start()] + text + old[m.end():] if m else old.rstrip("\n") + "\n\n" + text
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)
    log(f"wrote {path} and {os.path.join(docs, 'scale.png')}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", default="/var/tmp/mailkeep-scale")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--users", type=int, default=100, help="users the messages are spread over")
    ap.add_argument("--status-users", type=int, default=10000, help="0: no many-users set")
    ap.add_argument("--replay-max", type=int, default=100000, help="no replay above this size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each run (root)")
    ap.add_argument("--docs", help="write the section into this markdown file (BENCHMARKS.md), scale.png beside it")
    ap.add_argument("--command", default="bench/scale.sh")
    ap.add_argument("--commit", default=os.environ.get("MAILKEEP_COMMIT", "unknown"))
    ap.add_argument("--report-only", action="store_true", help="only write --docs from WORK/results-*.json")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    if a.cold and os.geteuid() != 0:
        ap.error("--cold drops the page cache: run as root")
    if a.report_only:
        return write_docs(a.work, a.docs)
    binary = os.path.abspath(a.bin)
    have = helps(binary)
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": a.commit,
               "command": a.command, "cache": "cold" if a.cold else "warm", "repeats": a.repeats,
               "load": " ".join(open("/proc/loadavg").read().split()[:3]), "sets": []}
    plan = [(int(n), a.users) for n in a.sizes.split(",") if n]
    if a.status_users:
        plan.append((a.status_users * 2, a.status_users))
    for messages, users in plan:
        root, meta = cached_backup(binary, a.work, messages, users)
        if root is None:
            log(f"{messages} messages: skipped: {meta['skipped']}")
            results.setdefault("notes", []).append(f"{messages} messages over {users} users: skipped: {meta['skipped']}")
            continue
        label = f"{messages // 1000} k" if messages < 1000000 else f"{messages // 1000000} M"
        if users > 1000:
            label = f"{users // 1000} k users"
        s = dict(meta, label=label, commands={})
        for name, template, destructive, prep in COMMANDS:
            if users > 1000 and name != "status":
                continue  # the many-users set is status's
            if name == "replay" and messages > a.replay_max:
                s["commands"][name] = {"skipped": f"not above {a.replay_max} messages (--replay-max)"}
                continue
            log(f"{label}: {name}")
            r = measure(binary, name, template, destructive, prep, root, meta, a.work, a, have)
            s["commands"][name] = r
            if "wall" in r:
                log(f"  {r['wall']:.2f} s, {r['rss_kib'] / 1024:.1f} MB, exit {r['exit']} {r['stderr']}")
            else:
                log(f"  skipped: {r['skipped']}")
        results["sets"].append(s)
        with open(os.path.join(a.work, f"results-{results['cache']}.json"), "w") as f:
            json.dump(results, f, indent=1)
    if a.docs:
        write_docs(a.work, a.docs)


if __name__ == "__main__":
    main()
