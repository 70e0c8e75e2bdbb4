#!/usr/bin/env python3
"""Independent reader for the replay tests: opens ROOT/USER with Python's mailbox.Maildir
and compares what it finds (folder, mtime, raw bytes) with EXPECTED.json as a multiset.
usage: replay_check.py ROOT USER EXPECTED.json   (exit 0 equal, 1 different)"""
import collections
import json
import mailbox
import sys

root, user, expected_path = sys.argv[1:4]
md = mailbox.Maildir(f"{root}/{user}", factory=None, create=False)
folders = {"INBOX": md}
for name in md.list_folders():
    folders[name] = md.get_folder(name)
got = collections.Counter()
for name, box in folders.items():
    for key in box.keys():
        got[(name, int(box.get_message(key).get_date()), box.get_bytes(key).decode("latin-1"))] += 1
want = collections.Counter((e["folder"], e["mtime"], e["content"]) for e in json.load(open(expected_path)))
if got == want:
    print(f"ok: {sum(got.values())} messages in {sorted(folders)}")
    sys.exit(0)
for item in sorted((want - got).elements()):
    print("MISSING  %s mtime=%d %r" % (item[0], item[1], item[2][:300]))
for item in sorted((got - want).elements()):
    print("EXTRA    %s mtime=%d %r" % (item[0], item[1], item[2][:300]))
sys.exit(1)
