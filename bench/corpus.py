#!/usr/bin/python3
"""Builds the benchmark's messages, the same for every run with the same seed.

    corpus.py dir DIR COUNT [--seed S] [--large PERCENT]   one file per message, DIR/list, DIR/msgids
    corpus.py mbox FILE COUNT [--seed S] [--large PERCENT] one mbox (mboxrd quoting, LF), FILE.msgids

Most messages are 2 to 20 KB (log-uniform): Received, DKIM-Signature and the usual
headers, then a multipart/alternative text and HTML body. PERCENT of them (default 1) are
0.2 to 2 MB: multipart/mixed with a base64 attachment. Every Message-ID is unique. Line
ends are LF, as Exim's pipe transport hands a message over; no From_ line in the files.
"""

import argparse
import base64
import math
import os
import random
import re
import sys

WORDS = (
    "the of and to in is that for it as with was on be by at this are or an have from not "
    "but which had they all were one there can been has more if will would when so what out "
    "about up into than them only other new some time could these two may then do first any "
    "like now over such our made after also did many before must through back years where much "
    "your way well down should because each just those people how too little state good very "
    "make world still own see men work long get here between both life being under never day "
    "same another know while last might us great old year off come since against go came right "
    "used take three invoice meeting report quarter budget shipment order account customer "
    "delivery schedule project review contract attached please regards thanks tomorrow Monday"
).split()


def text_pool(rng, size):
    """A few MB of plain text lines (max 72 chars); messages take slices of it."""
    lines, total = [], 0
    while total < size:
        words, n = [], 0
        target = rng.randint(40, 72)
        while n < target:
            w = rng.choice(WORDS)
            words.append(w)
            n += len(w) + 1
        line = " ".join(words)
        line = line[0].upper() + line[1:]
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


class Maker:
    def __init__(self, seed, large_percent):
        self.rng = random.Random(seed)
        self.pool = text_pool(self.rng, 4 << 20)
        self.large = large_percent / 100.0
        self.seed = seed

    def slice(self, n):
        start = self.rng.randrange(0, len(self.pool) - n - 200)
        start = self.pool.index("\n", start) + 1
        end = self.pool.index("\n", start + max(n, 1))
        return self.pool[start:end + 1]

    def message(self, i):
        """Returns (bytes, message-id, unix date, sender)."""
        rng = self.rng
        large = rng.random() < self.large
        size = int(math.exp(rng.uniform(math.log(200e3), math.log(2e6)))) if large else \
            int(math.exp(rng.uniform(math.log(2e3), math.log(20e3))))
        date = 1577836800 + rng.randrange(0, 5 * 365 * 86400)
        user = rng.choice(["bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan"])
        sender = f"{user}@{rng.choice(['example.com', 'example.net', 'partner.example'])}"
        msgid = f"{date:x}.{i:07d}.{self.seed}.{rng.getrandbits(48):012x}@mail.example.com"
        from email.utils import formatdate
        d = formatdate(date)
        hops = "".join(
            f"Received: from mx{h}.example.com (mx{h}.example.com [192.0.2.{rng.randrange(1, 250)}])\n"
            f"\tby relay.example.org with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384\n"
            f"\t(Exim 4.96) (envelope-from <{sender}>) id 1r{rng.getrandbits(40):010x}-000{h}\n"
            f"\tfor alice@example.org; {d}\n"
            for h in range(rng.randint(2, 4)))
        dkim_b = base64.b64encode(rng.randbytes(256)).decode()
        dkim = ("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s1;\n"
                f"\tt={date}; bh={base64.b64encode(rng.randbytes(32)).decode()};\n"
                "\th=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type;\n"
                + "".join(f"\t{dkim_b[k:k + 72]}\n" for k in range(0, len(dkim_b), 72)))
        subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize()
        head = (hops + dkim
                + f"From: {user.capitalize()} <{sender}>\nTo: Alice <alice@example.org>\n"
                + (f"Cc: team-{rng.randrange(100)}@example.org\n" if rng.random() < 0.3 else "")
                + f"Subject: {subject}\nDate: {d}\nMessage-ID: <{msgid}>\nMIME-Version: 1.0\n")
        b1 = f"=_alt_{rng.getrandbits(64):016x}"
        budget = max(size - len(head) - 250, 200)
        if large:
            b0 = f"=_mix_{rng.getrandbits(64):016x}"
            text = self.slice(rng.randrange(500, 3000))
            att = base64.encodebytes(rng.randbytes(max(budget - len(text) - 400, 1000) * 3 // 4)).decode()
            body = (f"Content-Type: multipart/mixed; boundary=\"{b0}\"\n\n"
                    f"This is a multi-part message in MIME format.\n\n--{b0}\n"
                    f"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{text}\n"
                    f"--{b0}\nContent-Type: application/pdf; name=\"report-{i}.pdf\"\n"
                    f"Content-Disposition: attachment; filename=\"report-{i}.pdf\"\n"
                    f"Content-Transfer-Encoding: base64\n\n{att}\n--{b0}--\n")
        else:
            text = self.slice(budget * 2 // 5)
            html_text = self.slice(budget * 3 // 5 - 120)
            html = "<html><body>\n" + "".join(f"<p>{line}</p>\n" for line in html_text.splitlines()) + "</body></html>\n"
            body = (f"Content-Type: multipart/alternative; boundary=\"{b1}\"\n\n"
                    f"--{b1}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{text}\n"
                    f"--{b1}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{html}\n"
                    f"--{b1}--\n")
        return (head + body).encode(), msgid, date, sender


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["dir", "mbox"])
    ap.add_argument("path")
    ap.add_argument("count", type=int)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--large", type=float, default=1.0, help="percent of 0.2-2 MB messages")
    a = ap.parse_args()
    mk = Maker(a.seed, a.large)
    from email.utils import formatdate
    import time
    total = 0
    if a.kind == "dir":
        os.makedirs(a.path, exist_ok=True)
        # list and msgids appear only once complete: their presence means a finished corpus.
        with open(os.path.join(a.path, "list.part"), "w") as lst, open(os.path.join(a.path, "msgids.part"), "w") as ids:
            for i in range(a.count):
                data, msgid, _, _ = mk.message(i)
                p = os.path.join(a.path, f"m{i:06d}.eml")
                with open(p, "wb") as f:
                    f.write(data)
                total += len(data)
                lst.write(p + "\n")
                ids.write(msgid + "\n")
        for name in ("list", "msgids"):
            os.rename(os.path.join(a.path, name + ".part"), os.path.join(a.path, name))
    else:
        with open(a.path, "wb", buffering=1 << 20) as f, open(a.path + ".msgids.part", "w") as ids:
            for i in range(a.count):
                data, msgid, date, sender = mk.message(i)
                asc = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(date))
                f.write(f"From {sender} {asc}\n".encode())
                f.write(re.sub(rb"(?m)^(>*From )", rb">\1", data))  # mboxrd quoting
                f.write(b"\n")
                total += len(data)
                ids.write(msgid + "\n")
        os.rename(a.path + ".msgids.part", a.path + ".msgids")
    print(f"{a.count} messages, {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
