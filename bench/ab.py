#!/usr/bin/python3
"""A/B of delivery binaries, interleaved message by message: for a proposed change.

    bench/ab.py [--work DIR] [-n 400] TOOL...

TOOL is `floor`, `floor-nodirsync`, `floor-dedup`, `safecat`, or a mailkeep binary, optionally followed
by `:` and extra deliver options (`./mailkeep:--dedup`). For each message of the corpus
(WORK/corpus-2000, built by bench/run.sh), every tool delivers it once into its own maildir,
in a new random order each time; CPU is the child's user+system time from wait4. Prints CPU
and wall per message and both as a ratio to the first tool.

Why not bench/run.sh: this host's speed drifts by up to 2x within a minute, and a
difference of a few per cent between two builds only shows when they run side by side.
Copy the binaries to compare afresh before a run (`cp`): a binary whose file has sat in the
page cache for an hour execs measurably slower than a fresh copy of the same bytes (seen
here: 1.17 against 1.09 x the floor).
"""

import argparse
import json
import os
import random
import tempfile
import time


def command(tool, root, floor):
    binary, _, extra = tool.partition(":")
    md = os.path.join(root, "alice")
    if binary == "floor":
        return [floor, "one", md]
    if binary == "floor-nodirsync":
        return [floor, "one", md, "nodirsync"]
    if binary == "floor-dedup":
        return [floor + "-dedup", "one", md, os.path.join(root, ".mailkeep", "dedup.sqlite3")]
    if binary == "safecat":
        return ["safecat", os.path.join(md, "tmp"), os.path.join(md, "new")]
    return [binary, "deliver", "--root", root, "--user", "alice", "--direction", "in",
            "--rcpt", "alice@example.org", "--log", "none", "--allow-root", *extra.split()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/var/tmp/mailkeep-bench")
    ap.add_argument("-n", type=int, default=400, help="messages (the corpus' first N)")
    ap.add_argument("tools", nargs="+")
    a = ap.parse_args()
    with open(os.path.join(a.work, "corpus-2000", "list")) as f:
        files = f.read().split()[: a.n]
    floor = os.path.join(a.work, "bin", "floor")
    scratch = tempfile.mkdtemp(prefix="ab.", dir=a.work)
    roots = {}
    for i, tool in enumerate(a.tools):
        roots[tool] = os.path.join(scratch, str(i))
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(roots[tool], "alice", sub))
        os.makedirs(os.path.join(roots[tool], ".mailkeep"), mode=0o700)
        # What `mailkeep init` writes (issue 20), written here so that a binary from before
        # init existed can be compared too.
        with open(os.path.join(roots[tool], ".mailkeep", "root.json"), "w") as f:
            json.dump({"id": os.urandom(16).hex(), "created": int(time.time())}, f)
    cpu = dict.fromkeys(a.tools, 0.0)
    wall = dict.fromkeys(a.tools, 0.0)
    for path in files:
        order = a.tools[:]
        random.shuffle(order)
        for tool in order:
            argv = command(tool, roots[tool], floor)
            t = time.monotonic()
            pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, path, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
            _, status, ru = os.wait4(pid, 0)
            wall[tool] += time.monotonic() - t
            cpu[tool] += ru.ru_utime + ru.ru_stime
            if status:
                raise SystemExit(f"ab: {tool} failed on {path} (wait status {status})")
    base = a.tools[0]
    for tool in a.tools:
        print(f"{tool:<32} CPU {1000 * cpu[tool] / len(files):.3f} ms/msg ({cpu[tool] / cpu[base]:.3f})  "
              f"wall {1000 * wall[tool] / len(files):.3f} ms/msg ({wall[tool] / wall[base]:.3f})")
    print(f"(maildirs left in {scratch})")


if __name__ == "__main__":
    main()
