#!/usr/bin/python3
"""Fake mail provider for the e2e test: an SMTP sink that keeps every transaction.

usage: sink.py HOST PORT OUTDIR PIDFILE
Transaction N is stored as OUTDIR/NNNN.eml (the DATA bytes as received, CRLF,
dot-unstuffed) and OUTDIR/NNNN.json ({"mail_from", "rcpt_tos", "peer"}); the
.json appears last (atomic renames). Writes PIDFILE once listening, removes it
on SIGTERM/SIGINT.
"""
import json, os, signal, sys, threading
from aiosmtpd.controller import Controller

host, port, outdir, pidfile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.makedirs(outdir, exist_ok=True)
lock = threading.Lock()
counter = [0]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        with lock:
            counter[0] += 1
            n = counter[0]
        base = os.path.join(outdir, "%04d" % n)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "peer": list(session.peer)[:2]}
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".eml.tmp", base + ".eml")
        os.rename(base + ".json.tmp", base + ".json")
        return "250 OK stored as %04d" % n


ctl = Controller(Handler(), hostname=host, port=port)
ctl.start()
with open(pidfile + ".tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(pidfile + ".tmp", pidfile)
print("sink listening on %s:%d -> %s" % (host, port, outdir), flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
signal.signal(signal.SIGINT, lambda *a: stop.set())
stop.wait()
ctl.stop()
try:
    os.unlink(pidfile)
except FileNotFoundError:
    pass
