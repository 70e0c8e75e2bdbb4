#!/usr/bin/python3
"""What a backup copy costs the relay (issue 24, section 1). Run by bench/relay.sh, as root.

The real Exim (the shipped exim-snippets/exim4.conf.example, paths and ports substituted)
on loopback, a sink playing the provider's MX, N inbound messages (2 to 200 KB, 1 to 3
listed recipients each) from several concurrent SMTP clients, timed until the sink has every
message and every copy is in a Maildir's new/. Set-ups, interleaved in each round:

  a  relay only (an empty accounts file: no copy)
  b  mailkeep deliver in the pipe transport (the shipped transport)
  c  the same with --dedup
  d  Exim's own appendfile transport, maildir_format
  e  Exim's lmtp transport into Dovecot's LMTP server
  f  Exim's lmtp transport into `mailkeep lmtp` (the shipped, commented-out transport)
  g  the same with --dedup (its store kept open)

CPU time from cgroups (v1 cpuacct, else v2 cpu.stat; --cgroup chooses): Exim and all it
forks in one; the copier (mailkeep deliver via bench/cgjoin, Dovecot, mailkeep lmtp) in
another; clients and sink in others, not counted. The pipe's process runs as mailbackup and
moves itself from Exim's cgroup into the copier's: v1 needs the copier's cgroup.procs
writable by it, v2 also the common parent's (cgroup v2 delegation), so both are chowned to
mailbackup for the run (the bench's own cgroups, removed after). A probe checks that before
the first round: a failure is one line and exit 2, not 600 s of deferred copies.

SIGTERM or SIGINT (bench/relay.sh passes them on) ends the run through the `finally`
blocks: clients, Exim and the copier stopped by pid, the sink stopped, cgroups removed.
"""
import argparse, json, multiprocessing as mp, os, random, re, shutil, signal, smtplib, socket
import statistics, subprocess, sys, time

EXIM = "/usr/sbin/exim4"
DOMAIN = "example.com"
USERS = ["u%02d" % i for i in range(20)]
NAMES = {"a": "relay only", "b": "mailkeep deliver (pipe)", "c": "mailkeep deliver --dedup (pipe)",
         "d": "Exim appendfile maildir", "e": "Dovecot LMTP", "f": "mailkeep lmtp",
         "g": "mailkeep lmtp --dedup"}


# ------------------------------------------------------------------ cgroups
class Cgroups:
    """One cgroup per part under NAME: usage in ns, a procs file to join."""

    def __init__(self, name, version="auto"):
        v1 = "/sys/fs/cgroup/cpuacct"
        self.v1 = version == "v1" or (version == "auto" and os.path.isfile(os.path.join(v1, "cpuacct.usage")))
        self.base = os.path.join(v1 if self.v1 else cgroup2_mount(), name)
        self.top = os.path.dirname(self.base)
        os.makedirs(self.base, exist_ok=True)

    def path(self, part):
        p = os.path.join(self.base, part)
        os.makedirs(p, exist_ok=True)
        return p

    def delegate(self, part, user):
        """Lets `user` move its own processes into `part` from a sibling cgroup."""
        shutil.chown(self.procs(part), user)
        if not self.v1:
            # v2: write access to the common ancestor's cgroup.procs as well.
            shutil.chown(os.path.join(self.base, "cgroup.procs"), user)

    def procs(self, part):
        return os.path.join(self.path(part), "cgroup.procs")

    def join(self, part, pid=0):
        with open(self.procs(part), "w") as f:
            f.write("%d\n" % (pid or os.getpid()))

    def kill_all(self, part):
        """Kills what is left in `part`: Exim's delivery processes (`exim -Mc`) are detached
        from the daemon, so stopping the daemon does not stop one hung on a connection."""
        for pid in open(self.procs(part)).read().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass

    def usage_ns(self, part):
        if self.v1:
            return int(open(os.path.join(self.path(part), "cpuacct.usage")).read())
        for line in open(os.path.join(self.path(part), "cpu.stat")):
            k, v = line.split()
            if k == "usage_usec":
                return int(v) * 1000
        raise RuntimeError("no usage_usec")

    def remove(self):
        try:
            self.kill_all("exim")
        except OSError:
            pass
        for part in os.listdir(self.base):
            p = os.path.join(self.base, part)
            if os.path.isdir(p):
                for pid in open(os.path.join(p, "cgroup.procs")).read().split():
                    try:
                        with open(os.path.join(self.top, "cgroup.procs"), "w") as f:
                            f.write(pid)
                    except OSError:
                        pass
                try:
                    os.rmdir(p)
                except OSError:
                    pass
        try:
            os.rmdir(self.base)
        except OSError:
            pass


def cgroup2_mount():
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrid)."""
    for line in open("/proc/mounts"):
        f = line.split()
        if f[2] == "cgroup2":
            return f[1]
    fail("no cgroup v1 cpuacct and no cgroup2 mount: cannot count CPU per part")


def fail(why):
    """A set-up failure: one line, exit 2."""
    print("relay.py: " + why, file=sys.stderr)
    sys.exit(2)


def on_stop(signum, _frame):
    """SIGTERM, SIGINT: in the main process a SystemExit, so every `finally` runs."""
    if os.getpid() != MAIN_PID:
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


MAIN_PID = os.getpid()


# ------------------------------------------------------------------ messages
WORDS = ("relay backup maildir copy message durable fsync queue transport exim lmtp sink "
         "provider inbox sent header body line the of and to a in is it for on").split()


def make_messages(n, seed):
    """N messages: (recipients, bytes with LF), sizes log-uniform in 2..200 KB."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        k = rnd.choices([1, 2, 3], [70, 20, 10])[0]
        rcpts = ["%s@%s" % u for u in zip(rnd.sample(USERS, k), [DOMAIN] * k)]
        size = int(2048 * (100 ** rnd.random()))
        head = ("From: Ext Sender <ext%d@example.net>\nTo: %s\nSubject: relay bench %d\n"
                "Date: Thu, 01 Jan 2026 12:00:00 +0000\nMessage-ID: <relay-%d-%d@example.net>\n"
                "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
                % (i, ", ".join(rcpts), i, seed, i))
        body, length = [], len(head)
        while length < size:
            line = " ".join(rnd.choice(WORDS) for _ in range(11))
            if rnd.random() < 0.02:
                line = "." + line
            body.append(line)
            length += len(line) + 1
        out.append((rcpts, (head + "\n".join(body) + "\n").encode()))
    return out


# ------------------------------------------------------------------ sink and clients
def sink_main(host, port, counter, cgroups, ready):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    cgroups.join("sink")
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with counter.get_lock():
                counter.value += 1
            return "250 OK"

    ctl = Controller(Handler(), hostname=host, port=port)
    ctl.start()
    ready.set()
    signal.sigwait([signal.SIGTERM])
    ctl.stop()


def client_main(port, batch, cgroups):
    cgroups.join("clients")
    s = smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.3", 0), local_hostname="client.test", timeout=300)
    for rcpts, data in batch:
        s.sendmail("ext@example.net", rcpts, data)
    s.quit()


# ------------------------------------------------------------------ Exim configuration
def subst(text, name, value):
    """The one line `NAME = ...` (or `# NAME =`) becomes `NAME = VALUE`; exactly one must exist."""
    pat = re.compile(r"^(# *)?" + re.escape(name) + r" *=.*$", re.M)
    if len(pat.findall(text)) != 1:
        sys.exit("relay.py: expected one '%s =' line in the snippet" % name)
    return pat.sub(lambda m: name + " = " + value.replace("\\", "\\\\"), text, count=1)


def uncomment_block(text, name):
    """The commented-out transport `#NAME:` and its `#  option` lines, uncommented."""
    lines, out, inside = text.split("\n"), [], False
    for line in lines:
        if line == "#" + name + ":":
            inside = True
        elif inside and not line.startswith("#  "):
            inside = False
        out.append(line[1:] if inside else line)
    if "\n" + name + ":" not in "\n".join(out):
        sys.exit("relay.py: no commented-out transport %s in the snippet" % name)
    return "\n".join(out)


MAIN_EXTRA = """
# bench/relay.py: the confounders, switched off on purpose
host_lookup =
rfc1413_hosts =
queue_only = false
smtp_accept_queue_per_connection = 0
smtp_accept_max = 100
remote_max_parallel = 1
"""


def build_config(w, variant):
    text = open(os.path.join(w.snippets, "exim4.conf.example")).read()
    for name, value in [("MAILKEEP_ROOT", w.root), ("MAILKEEP_ACCOUNTS", w.accounts(variant)),
                        ("MAILKEEP_PROVIDER_RELAYS", w.relays), ("MAILKEEP_PROVIDER_MX", "127.0.0.2::%d" % w.sink_port),
                        ("MAILKEEP_BIN", "%s %s %s" % (w.cgjoin, w.cg.procs("copier"), w.mailkeep)),
                        ("MAILKEEP_OPTIONS", "--log syslog" + (" --dedup" if variant == "c" else "")),
                        ("MAILKEEP_SMARTHOST", "127.0.0.2::%d" % w.sink_port),
                        ("local_interfaces", "<; 127.0.0.1"), ("daemon_smtp_ports", str(w.smtp_port)),
                        ("spool_directory", w.spool), ("log_file_path", w.log + "/%slog")]:
        text = subst(text, name, value)
    text = text.replace("\nbegin acl\n", MAIN_EXTRA + "\nbegin acl\n", 1)
    transport = {"d": "bench_appendfile", "e": "bench_dovecot_lmtp", "f": "mailkeep_inbox_lmtp",
                 "g": "mailkeep_inbox_lmtp"}.get(variant)
    if transport:
        router = "  transport   = mailkeep_inbox\n"
        if text.count(router) != 1:
            sys.exit("relay.py: the INBOX router's transport line is not where it was")
        text = text.replace(router, "  transport   = %s\n" % transport)
    if variant in "fg":
        text = uncomment_block(text, "mailkeep_inbox_lmtp")
        text = text.replace("/run/mailkeep/lmtp.sock", w.mk_socket)
    extra = """
bench_appendfile:
  driver          = appendfile
  directory       = %s/${lc:${lookup{$local_part}lsearch,ret=key{%s}}}
  maildir_format
  create_directory
  directory_mode  = 0700
  mode            = 0600
  user            = mailbackup
  return_path_add
  envelope_to_add

bench_dovecot_lmtp:
  driver          = lmtp
  socket          = %s
  batch_max       = 100
  user            = mailbackup
  return_path     = $sender_address
""" % (w.root, w.accounts(variant), w.dovecot_socket)
    text = text.replace("\nbegin retry\n", extra + "\nbegin retry\n", 1)
    path = os.path.join(w.dir, "exim-%s.conf" % variant)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


DOVECOT_CONF = """
base_dir = {dir}/dovecot-run
state_dir = {dir}/dovecot-state
log_path = {dir}/dovecot.log
protocols = lmtp
ssl = no
mail_location = maildir:{root}/%n
mail_uid = mailbackup
mail_gid = mailbackup
first_valid_uid = 1
userdb {{
  driver = static
  args = uid=mailbackup gid=mailbackup home={root}/%n allow_all_users=yes
}}
passdb {{
  driver = static
  args = nopassword=y
}}
service lmtp {{
  unix_listener {socket} {{
    mode = 0666
  }}
}}
"""


# ------------------------------------------------------------------ one round
class Work:
    def __init__(self, a):
        self.dir, self.snippets, self.mailkeep, self.cgjoin = a.work, a.snippets, a.mailkeep, a.cgjoin
        self.root, self.spool, self.log = a.work + "/root", a.work + "/spool", a.work + "/log"
        self.relays = a.work + "/provider-relays"
        # mailkeep lmtp runs as mailbackup and makes its socket in a directory of its own.
        os.makedirs(a.work + "/run", exist_ok=True)
        shutil.chown(a.work + "/run", "mailbackup", "mailbackup")
        self.mk_socket, self.dovecot_socket = a.work + "/run/mk-lmtp.sock", a.work + "/dovecot-lmtp.sock"
        self.smtp_port, self.sink_port = free_port(2725), free_port(2826)
        self.cg = Cgroups("mailkeep-relay-bench", a.cgroup)
        for d in (self.spool, self.log):
            os.makedirs(d, exist_ok=True)
            shutil.chown(d, "Debian-exim", "Debian-exim")
        with open(self.relays, "w") as f:
            f.write("127.0.0.2\n")
        with open(a.work + "/accounts", "w") as f:
            f.write("".join(u + "\n" for u in USERS))
        open(a.work + "/accounts-empty", "w").close()
        os.chmod(a.work, 0o755)
        self.cg.procs("exim")
        # mailbackup (the pipe's user) joins the copier cgroup itself.
        self.cg.delegate("copier", "mailbackup")
        self.probe_cgjoin()

    def probe_cgjoin(self):
        """Fails fast unless a mailbackup process in Exim's cgroup can join the copier's."""
        probe = subprocess.run(as_mailbackup([self.cgjoin, self.cg.procs("copier"), "/bin/true"]),
                               preexec_fn=lambda: self.cg.join("exim"), capture_output=True, text=True)
        if probe.returncode != 0:
            why = ("mailbackup cannot move the pipe's process from %s into %s (cgroup %s; %s): every copy would defer"
                   % (self.cg.path("exim"), self.cg.path("copier"), "v1" if self.cg.v1 else "v2",
                      probe.stderr.strip() or "exit %d" % probe.returncode))
            self.cg.remove()
            fail(why)

    def accounts(self, variant):
        return self.dir + ("/accounts-empty" if variant == "a" else "/accounts")


def free_port(start):
    p = start
    while True:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                p += 1


def wait_for(cond, what, limit=30):
    t = time.time()
    while not cond():
        if time.time() - t > limit:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.02)


def as_mailbackup(cmd):
    return ["setpriv", "--reuid=mailbackup", "--regid=mailbackup", "--init-groups"] + cmd


def fresh_root(w):
    shutil.rmtree(w.root, ignore_errors=True)
    os.makedirs(w.root)
    shutil.chown(w.root, "mailbackup", "mailbackup")
    os.chmod(w.root, 0o750)
    subprocess.run(as_mailbackup([w.mailkeep, "init", "--root", w.root]), check=True, stdout=subprocess.DEVNULL)


def count_copies(root):
    n = 0
    for user in os.listdir(root):
        d = os.path.join(root, user, "new")
        if os.path.isdir(d):
            n += len(os.listdir(d))
    return n


def start_copier(w, variant):
    """The copier's daemon (none for a to d), in the copier cgroup."""
    join = lambda: w.cg.join("copier")  # noqa: E731
    if variant in "fg":
        for p in (w.mk_socket,):
            if os.path.exists(p):
                os.unlink(p)
        cmd = as_mailbackup([w.mailkeep, "lmtp", "--root", w.root, "--listen", w.mk_socket, "--log", "syslog",
                             "--max-connections", "64"] + (["--dedup"] if variant == "g" else []))
        proc = subprocess.Popen(cmd, preexec_fn=join, stderr=open(w.dir + "/mk-lmtp.err", "a"))
        wait_for(lambda: os.path.exists(w.mk_socket), "mailkeep lmtp's socket")
        return proc
    if variant == "e":
        conf = w.dir + "/dovecot.conf"
        with open(conf, "w") as f:
            f.write(DOVECOT_CONF.format(dir=w.dir, root=w.root, socket=w.dovecot_socket))
        proc = subprocess.Popen(["dovecot", "-F", "-c", conf], preexec_fn=join, stderr=open(w.dir + "/dovecot.err", "a"))
        wait_for(lambda: os.path.exists(w.dovecot_socket), "Dovecot's LMTP socket")
        return proc
    return None


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def want_copies(variant, messages):
    return 0 if variant == "a" else sum(len(r) for r, _ in messages)


def timed_run(w, messages, clients, counter, want):
    """Sends every message; returns the wall time until all are relayed and stored, and the
    CPU ms per message of Exim and of the copier."""

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", w.smtp_port)) == 0

    wait_for(listening, "Exim's port")
    with counter.get_lock():
        counter.value = 0
    time.sleep(0.3)
    cpu0 = {p: w.cg.usage_ns(p) for p in ("exim", "copier")}
    t0 = time.time()
    procs = [mp.Process(target=client_main, args=(w.smtp_port, messages[i::clients], w.cg)) for i in range(clients)]
    for p in procs:
        p.start()
    done = lambda: counter.value >= len(messages) and count_copies(w.root) >= want  # noqa: E731
    try:
        wait_for(done, "every message relayed and every copy stored", limit=600)
    finally:
        for p in procs:
            if not done():
                p.terminate()
            p.join()
    wall = time.time() - t0
    # The last deliveries' processes end a moment after their copies appear.
    time.sleep(0.2)
    return wall, {p: (w.cg.usage_ns(p) - cpu0[p]) / 1e6 / len(messages) for p in ("exim", "copier")}


def round_once(w, variant, messages, clients, counter):
    fresh_root(w)
    conf = build_config(w, variant)
    bad = subprocess.run([EXIM, "-C", conf, "-bV"], capture_output=True, text=True)
    if bad.returncode != 0:
        raise RuntimeError("exim -bV: " + bad.stdout + bad.stderr)
    copier = exim = None
    try:
        copier = start_copier(w, variant)
        exim = subprocess.Popen([EXIM, "-C", conf, "-bdf", "-oX", str(w.smtp_port)],
                                preexec_fn=lambda: w.cg.join("exim"))
        wall, cpu = timed_run(w, messages, clients, counter, want_copies(variant, messages))
        queued = subprocess.run([EXIM, "-C", conf, "-bpc"], capture_output=True, text=True).stdout.strip()
    finally:
        stop(exim)
        stop(copier)
        w.cg.kill_all("exim")
    copies = count_copies(w.root)
    return {"variant": variant, "wall_s": wall, "msgs_per_s": len(messages) / wall, "exim_ms": cpu["exim"],
            "copier_ms": cpu["copier"], "copies": copies, "want_copies": want_copies(variant, messages),
            "queued": queued}


# ------------------------------------------------------------------ report
def table(results, variants, a):
    med = {}
    for v in variants:
        rs = [r for r in results if r["variant"] == v]
        med[v] = {k: statistics.median(r[k] for r in rs) for k in ("msgs_per_s", "exim_ms", "copier_ms")}
        med[v]["total_ms"] = statistics.median(r["exim_ms"] + r["copier_ms"] for r in rs)
        med[v]["spread"] = (max(r["msgs_per_s"] for r in rs) - min(r["msgs_per_s"] for r in rs)) / med[v]["msgs_per_s"]
    base = med.get("a")
    out = ["| set-up | msgs/s | x (a) | Exim CPU ms/msg | copier CPU ms/msg | total CPU ms/msg | x (a) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for v in variants:
        m = med[v]
        ra = lambda k: "%.2f" % (m[k] / base[k]) if base and base[k] else "-"  # noqa: E731
        out.append("| (%s) %s | %.1f | %s | %.2f | %.2f | %.2f | %s |" % (
            v, NAMES[v], m["msgs_per_s"], ra("msgs_per_s"), m["exim_ms"], m["copier_ms"], m["total_ms"], ra("total_ms")))
    out.append("")
    copies = max(r["want_copies"] for r in results)
    spread = ", ".join("(%s) %.0f%%" % (v, 100 * med[v]["spread"]) for v in variants)
    out.append("%d messages (2 to 200 KB, log-uniform; 1 to 3 listed recipients: %d copies), %d concurrent SMTP "
               "clients, %d interleaved rounds, medians. Throughput spread (max-min)/median: %s. "
               "Load average at the start: %s." % (a.messages, copies, a.clients, a.rounds, spread, a.load))
    return "\n".join(out), med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--snippets", required=True)
    ap.add_argument("--mailkeep", required=True)
    ap.add_argument("--cgjoin", required=True)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="abcdefg")
    ap.add_argument("--seed", type=int, default=24)
    ap.add_argument("--cgroup", choices=("auto", "v1", "v2"), default="auto")
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    a = ap.parse_args()
    a.load = " ".join(open("/proc/loadavg").read().split()[:3])
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop)
    w = Work(a)
    counter = mp.Value("l", 0)
    ready = mp.Event()
    sink = mp.Process(target=sink_main, args=("127.0.0.2", w.sink_port, counter, w.cg, ready))
    results = []
    try:
        sink.start()
        ready.wait(30)
        messages = make_messages(a.messages, a.seed)
        for r in range(a.rounds):
            order = a.variants[r % len(a.variants):] + a.variants[:r % len(a.variants)]
            for v in order:
                res = round_once(w, v, messages, a.clients, counter)
                res["round"] = r
                results.append(res)
                print("round %d (%s) %-32s %6.1f msgs/s  exim %5.2f ms  copier %5.2f ms  copies %d/%d  queued %s"
                      % (r, v, NAMES[v], res["msgs_per_s"], res["exim_ms"], res["copier_ms"], res["copies"],
                         res["want_copies"], res["queued"]), flush=True)
    finally:
        if sink.pid:
            os.kill(sink.pid, signal.SIGTERM)
            sink.join(10)
        w.cg.remove()
    md, med = table(results, list(a.variants), a)
    print(md)
    if a.json:
        json.dump({"results": results, "medians": med, "messages": a.messages, "clients": a.clients}, open(a.json, "w"),
                  indent=1)
    if a.md:
        open(a.md, "w").write(md + "\n")
    failed = [r for r in results if r["copies"] != r["want_copies"] or r["queued"] not in ("0", "")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
