#!/usr/bin/python3
"""Minimal SMTP client for the e2e test.

usage: send.py [--bind IP] --server HOST:PORT --from ADDR --rcpt A,B,.. --data FILE
--from '' sends the null sender MAIL FROM:<> (a bounce).
Prints "QUEUEID <id>" on acceptance (from Exim's "250 OK id=..." or Postfix's
"250 2.0.0 Ok: queued as ..."; tests/postfix uses it too); exits 2 if
any RCPT is refused (printing the refusals), 1 on other errors.
The DATA file is sent with CRLF line ends; smtplib does the dot-stuffing.
"""
import argparse, re, smtplib, sys

ap = argparse.ArgumentParser()
ap.add_argument("--bind", default=None)
ap.add_argument("--server", required=True)
ap.add_argument("--from", dest="mail_from", required=True)
ap.add_argument("--rcpt", required=True)
ap.add_argument("--data", required=True)
a = ap.parse_args()
host, port = a.server.rsplit(":", 1)
rcpts = [r for r in a.rcpt.split(",") if r]
data = open(a.data, "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

s = smtplib.SMTP(host, int(port), source_address=(a.bind, 0) if a.bind else None,
                 local_hostname="client.test", timeout=20)
s.ehlo()
code, msg = s.mail(a.mail_from)
if code != 250:
    print("MAIL FROM refused: %d %s" % (code, msg.decode())); sys.exit(1)
refused = {}
for r in rcpts:
    code, msg = s.rcpt(r)
    if code not in (250, 251):
        refused[r] = (code, msg.decode())
if refused:
    for r, (c, m) in refused.items():
        print("RCPT refused: <%s> %d %s" % (r, c, m))
    s.rset(); s.quit(); sys.exit(2)
code, msg = s.data(data)
s.quit()
m = re.search(r"(?:id=|queued as )(\S+)", msg.decode())
if code != 250 or not m:
    print("DATA failed: %d %s" % (code, msg.decode())); sys.exit(1)
print("QUEUEID", m.group(1))
