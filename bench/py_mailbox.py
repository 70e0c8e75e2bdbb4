#!/usr/bin/python3
"""The bulk comparison "Python's mailbox": every message of an mbox into a Maildir with the
standard library alone, as an admin's ten-line script would. Maildir.add fsyncs each file
(mailbox._sync_close) before linking it into new/; it does not fsync the directory.

    py_mailbox.py MBOX MAILDIR
"""
import mailbox
import sys

src, dest = sys.argv[1:3]
mb = mailbox.mbox(src, create=False)
md = mailbox.Maildir(dest, factory=None, create=True)
n = 0
for key in mb.iterkeys():
    md.add(mb.get_bytes(key))  # bytes: no email parsing, the fastest way the module offers
    n += 1
print(f"py_mailbox: {n} messages", file=sys.stderr)
