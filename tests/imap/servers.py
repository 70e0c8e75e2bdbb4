"""Start and stop Dovecot and Courier IMAP on 127.0.0.1, each stopped by its own pid.

Adapted from the shared IMAP harness (recipes/imap/servers.py). Dovecot runs the
configuration `mailkeep serve-config dovecot` wrote, unchanged. Courier has no such
generator: it gets a minimal private config, and because its auth paths are compiled in
(/etc/courier, /run/courier/authdaemon) it runs inside `unshare --mount --pid`, with our
own directories bind-mounted over those paths, so the system's are neither used nor changed.
"""
import os
import signal
import socket
import subprocess
import time


def free_port():
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_greeting(port, timeout=20.0):
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                data = s.recv(1024)
                if data.startswith(b"* OK"):
                    s.sendall(b"a LOGOUT\r\n")
                    return data.decode(errors="replace").strip()
                last = data
        except OSError as e:
            last = e
        time.sleep(0.02)
    raise RuntimeError(f"no IMAP greeting on 127.0.0.1:{port} after {timeout}s: {last!r}")


def port_closed(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid):
    res, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            res.append(c)
            todo.append(c)
    return res


def pidns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def listeners(port):
    """`ss` lines of the sockets listening on `port` (any address)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if l.strip()]


class Server:
    name = "?"
    proc = None

    def stop(self, timeout=15):
        """SIGTERM to the one pid; then everything that ran with it must be gone."""
        if self.proc is None:
            return []
        before = self.extra_pids()
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in before) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.proc = None
        return [p for p in before if alive(p)]

    def extra_pids(self):
        return descendants(self.pid)


class Dovecot(Server):
    name = "dovecot"

    def __init__(self, conf, port):
        self.conf, self.port = conf, port
        self.d = os.path.dirname(conf)
        self.log = os.path.join(self.d, "dovecot.log")

    def start(self):
        self.out = open(os.path.join(self.d, "dovecot.stdout"), "ab")
        # -F: foreground, so proc.pid is the master
        self.proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", self.conf],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.greeting = wait_greeting(self.port)
        return self

    def logtext(self):
        out = []
        for f in (self.log, os.path.join(self.d, "dovecot.stdout")):
            if os.path.exists(f):
                out.append(f"--- {f}\n" + open(f, errors="replace").read())
        return "\n".join(out)


AUTHDAEMONRC = """\
authmodulelist="authuserdb"
daemons=1
authdaemonvar=/run/courier/authdaemon
DEBUG_LOGIN=0
DEFAULTOPTIONS=""
LOGGEROPTS=""
"""

# what /etc/courier/imapd normally gives couriertcpd -> imaplogin -> imapd
IMAPD_ENV = """\
IMAP_CAPABILITY="IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"
IMAP_STARTTLS=NO
IMAP_TLS_REQUIRED=0
IMAP_KEYWORDS=1
IMAP_ACL=1
IMAP_USELOCKS=1
IMAP_MAILBOX_SANITY_CHECK=1
IMAP_ENHANCEDIDLE=0
IMAP_IDLE_TIMEOUT=60
IMAP_UMASK=077
IMAP_TRASHFOLDERNAME=Trash
IMAP_EMPTYTRASH=Trash:7
"""

# PID 1 of `unshare --mount --propagation private --pid`: when it exits, the kernel kills
# whatever is left in the namespace (imapd, gam_server)
NS_SH = """\
#!/bin/sh
set -e
C="$1"; PORT="$2"; ROOT="$3"
mount --bind "$C/etc-courier" /etc/courier
mkdir -p /run/courier/authdaemon
mount --bind "$C/authdaemon" /run/courier/authdaemon
/usr/lib/courier/courier-authlib/authdaemond >>"$C/authdaemond.log" 2>&1 &
echo $! > "$C/authdaemond.pid"
i=0
while [ ! -S /run/courier/authdaemon/socket ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done
set -a; . "$C/imapd.env"; set +a
/usr/sbin/couriertcpd -address=127.0.0.1 -nodnslookup -noidentlookup -maxprocs=20 -maxperip=20 \\
    "$PORT" "$ROOT/usr/lib/courier/courier/imaplogin" "$ROOT/usr/bin/imapd" Maildir \\
    >>"$C/courier.log" 2>&1 &
echo $! > "$C/couriertcpd.pid"
trap 'kill -TERM $(cat "$C/couriertcpd.pid") $(cat "$C/authdaemond.pid") 2>/dev/null; wait' TERM INT
wait
"""


class Courier(Server):
    name = "courier"

    def __init__(self, workdir, port, courier_root, users):
        """users: (name, uid, gid, maildir, password) each; the maildir is the user's home."""
        self.d = os.path.join(workdir, "courier")
        self.port, self.courier_root = port, courier_root
        self.etc = os.path.join(self.d, "etc-courier")
        os.makedirs(self.etc, exist_ok=True)
        os.makedirs(os.path.join(self.d, "authdaemon"), exist_ok=True)
        os.chmod(os.path.join(self.d, "authdaemon"), 0o750)
        with open(os.path.join(self.etc, "authdaemonrc"), "w") as f:
            f.write(AUTHDAEMONRC)
        userdb = os.path.join(self.etc, "userdb")
        with open(userdb, "w") as f:
            for name, uid, gid, maildir, password in users:
                crypt = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password,
                                       capture_output=True, text=True, check=True).stdout.strip()
                f.write(f"{name}\tuid={uid}|gid={gid}|home={maildir}|mail={maildir}|systempw={crypt}\n")
        os.chmod(userdb, 0o600)
        with open(os.path.join(self.d, "imapd.env"), "w") as f:
            f.write(IMAPD_ENV)
        self.ns_sh = os.path.join(self.d, "courier-ns.sh")
        with open(self.ns_sh, "w") as f:
            f.write(NS_SH)
        self.log = os.path.join(self.d, "courier.log")

    def start(self):
        # makeuserdb writes /etc/courier/userdb.dat: run it with our dir mounted there
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f'mount --bind "{self.etc}" /etc/courier && /usr/sbin/makeuserdb'], check=True)
        self.out = open(os.path.join(self.d, "ns.stdout"), "ab")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                      "--pid", "--kill-child=TERM",
                                      "/bin/sh", self.ns_sh, self.d, str(self.port), self.courier_root],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        try:
            self.greeting = wait_greeting(self.port)
        finally:
            # unshare blocks SIGTERM while it waits: signal its child, the namespace's PID 1,
            # whose trap stops couriertcpd and authdaemond
            kids = children(self.proc.pid)
            self.pid = kids[0] if kids else self.proc.pid
            self.ns = pidns(self.pid)
        return self

    def extra_pids(self):
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and pidns(int(p)) == self.ns]

    def logtext(self):
        out = []
        for f in ("courier.log", "authdaemond.log", "ns.stdout"):
            p = os.path.join(self.d, f)
            if os.path.exists(p):
                out.append(f"--- {p}\n" + open(p, errors="replace").read())
        return "\n".join(out)
