#!/usr/bin/python3
"""Look into the sink and the backup Maildirs for run-e2e.sh.

Messages are found by Exim's queue id, which Exim writes into the Received:
header it adds on reception ("id 1tAbCd-000123-4X"): the sink's copy and every
stored copy of one message carry the same one.

  e2e_inspect.py sink SINKDIR QID        one line per sink transaction of QID:
                                           FILE<TAB>MAIL_FROM<TAB>RCPT,RCPT...
  e2e_inspect.py bounces SINKDIR QID     sink files that are bounces (MAIL FROM:<>)
                                           quoting QID
  e2e_inspect.py maildir ROOT QID        one line per stored copy of QID:
                                           USER<TAB>FOLDER(INBOX|.Sent|...)<TAB>PATH
  e2e_inspect.py count ROOT              number of message files in all Maildirs
  e2e_inspect.py header FILE NAME        unfolded value of the first NAME: header
  e2e_inspect.py added FILE SINKFILE     checks FILE == (header lines mailkeep added)
                                           + SINKFILE (CRLF -> LF); prints the added
                                           header names, comma-separated; exit 1 and
                                           a diff otherwise
  e2e_inspect.py same-but-trace A B      exit 0 if A and B are identical apart from
                                           Exim's Received: and the Message-ID:
                                           header; else a diff
  e2e_inspect.py name FILE               checks the Maildir file name
                                           (<secs>.M<usec>P<pid>Q<n>.<host>,S=<size>)
                                           and that S= is the file's size
"""
import difflib, glob, json, os, re, sys

ADDED = ("return-path", "delivered-to", "envelope-to")
NAME_RE = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.([^,/]+),S=(\d+)(:2,[A-Za-z]*)?$")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def header_block(raw):
    raw = raw.replace(b"\r\n", b"\n")
    end = raw.find(b"\n\n")
    return raw if end < 0 else raw[:end + 1]


def headers(raw):
    """[(name, value-with-continuations)] of the header block, in order."""
    out = []
    for line in header_block(raw).split(b"\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and out:
            out[-1][1] += b"\n" + line
        else:
            name, _, value = line.partition(b":")
            out.append([name.decode("latin-1"), value])
    return out


def first_header(raw, name):
    for n, v in headers(raw):
        if n.lower() == name.lower():
            return re.sub(rb"\s*\n\s*", b" ", v).strip().decode("latin-1")
    return None


def queue_id(raw):
    rec = first_header(raw, "Received")
    if rec is None:
        return None
    m = re.search(r"\bid (\S+?)[;\s]", rec + " ")
    return m.group(1) if m else None


def strip_added(raw):
    """(names of the leading mailkeep header lines, the rest of the bytes)."""
    names, pos = [], 0
    lines = raw.split(b"\n")
    i = 0
    while i < len(lines):
        name = lines[i].partition(b":")[0].decode("latin-1")
        if name.lower() not in ADDED or b":" not in lines[i]:
            break
        names.append(name)
        pos += len(lines[i]) + 1
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            pos += len(lines[i]) + 1
            i += 1
    return names, raw[pos:]


def remove_trace(raw):
    """raw without its first Received: and first Message-ID: header."""
    lines = raw.split(b"\n")
    out, i, done, in_header = [], 0, set(), True
    while i < len(lines):
        in_header = in_header and lines[i] != b""
        name = lines[i].split(b":", 1)[0].lower() if in_header and b":" in lines[i] else None
        if name in (b"received", b"message-id") and name not in done:
            done.add(name)
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return b"\n".join(out)


def diff(a, b, la, lb):
    d = difflib.unified_diff(a.decode("latin-1").splitlines(True),
                             b.decode("latin-1").splitlines(True), la, lb)
    sys.stdout.write("".join(list(d)[:60]))


def sink_tx(sinkdir):
    for j in sorted(glob.glob(os.path.join(sinkdir, "*.json"))):
        meta = json.load(open(j))
        yield j[:-5] + ".eml", meta


def maildir_files(root):
    for d in sorted(glob.glob(os.path.join(root, "*", "new")) + glob.glob(os.path.join(root, "*", "cur"))
                    + glob.glob(os.path.join(root, "*", ".*", "new"))
                    + glob.glob(os.path.join(root, "*", ".*", "cur"))):
        rel = os.path.relpath(d, root).split(os.sep)
        user = rel[0]
        folder = "INBOX" if len(rel) == 2 else rel[1]
        for f in sorted(os.listdir(d)):
            yield user, folder, os.path.join(d, f)


def main(argv):
    cmd = argv[1]
    if cmd == "sink":
        for eml, meta in sink_tx(argv[2]):
            if queue_id(read(eml)) == argv[3]:
                print("%s\t%s\t%s" % (eml, meta["mail_from"], ",".join(sorted(meta["rcpt_tos"]))))
    elif cmd == "bounces":
        for eml, meta in sink_tx(argv[2]):
            if meta["mail_from"] in ("", "<>") and argv[3].encode() in read(eml):
                print(eml)
    elif cmd == "maildir":
        for user, folder, path in maildir_files(argv[2]):
            if queue_id(read(path)) == argv[3]:
                print("%s\t%s\t%s" % (user, folder, path))
    elif cmd == "count":
        print(sum(1 for _ in maildir_files(argv[2])))
    elif cmd == "header":
        v = first_header(read(argv[2]), argv[3])
        if v is None:
            return 1
        print(v)
    elif cmd == "added":
        stored, sink = read(argv[2]), read(argv[3]).replace(b"\r\n", b"\n")
        names, rest = strip_added(stored)
        print(",".join(names))
        if rest != sink:
            print("stored copy minus the added header lines differs from the sink's copy:")
            diff(sink, rest, "sink " + argv[3], "stored " + argv[2])
            return 1
    elif cmd == "same-but-trace":
        a, b = remove_trace(read(argv[2])), remove_trace(read(argv[3]))
        if a != b:
            diff(a, b, argv[2], argv[3])
            return 1
    elif cmd == "name":
        base = os.path.basename(argv[2])
        m = NAME_RE.match(base)
        if not m:
            print("bad Maildir file name: %s" % base)
            return 1
        size = os.path.getsize(argv[2])
        if int(m.group(6)) != size:
            print("S=%s but the file has %d bytes: %s" % (m.group(6), size, base))
            return 1
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
