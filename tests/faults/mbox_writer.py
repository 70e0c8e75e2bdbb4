#!/usr/bin/env python3
"""Writes mbox files with Python's own mailbox.mbox, for tests/props.rs.

One request per line on stdin, JSON: {"path": "...", "messages": ["<hex>", ...]}.
Each message (bytes) is added with mailbox.mbox.add, exactly as a Python script that
archives mail would. The answer, one JSON line on stdout, is what Python's mailbox reads
back from the file it wrote: {"read_back": ["<hex>", ...]} (get_bytes, without the From_
line), so the test can hold mailkeep's reading against Python's.
"""
import json
import mailbox
import sys


def main():
    for line in sys.stdin:
        req = json.loads(line)
        box = mailbox.mbox(req["path"], create=True)
        box.lock()
        try:
            for m in req["messages"]:
                box.add(bytes.fromhex(m))
            box.flush()
        finally:
            box.unlock()
            box.close()
        box = mailbox.mbox(req["path"], create=False)
        back = [box.get_bytes(k).hex() for k in box.keys()]
        box.close()
        sys.stdout.write(json.dumps({"read_back": back}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
