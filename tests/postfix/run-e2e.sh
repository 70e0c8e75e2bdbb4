#!/bin/bash
# End-to-end test of postfix-snippets/ with the real Postfix 3.7 (Debian 12) and the real
# mailkeep binary, beside an installed Exim.
#
# Debian's postfix and exim4 packages conflict, and Exim stays the system MTA: Postfix runs
# from its unpacked packages (tests/postfix/setup.sh, POSTFIX_DIR) as a private instance,
# `postfix -c $WORK/conf`, with its own queue, data directory and log file, listening on
# 127.0.0.1 only. It starts, on loopback only:
#   * Postfix, with main.cf = a test base (queue, log, interfaces, the unpacked
#     directories) + postfix-snippets/main.cf.fragment, and master.cf = the stock services
#     + the public port + postfix-snippets/master.cf.fragment, where only paths, ports and
#     hosts are substituted (each substituted string must be found in the snippet);
#   * a fake provider (tests/exim/sink.py on 127.0.0.1:SINK_PORT): the provider's MX and
#     "the Internet", keeping every transaction;
#   * clients (tests/exim/send.py): 127.0.0.2 plays the provider's outbound relay,
#     127.0.0.3 anybody else.
# Then the scenarios; asserts from the Maildirs, the sink and Postfix's log. Everything it
# starts it stops (master pid, sink pid); ports are checked free; nothing is installed.
#
# Usage (as root, after tests/postfix/setup.sh and cargo build --release):
#   tests/postfix/run-e2e.sh
# Env:
#   MAILKEEP=path     mailkeep binary (default <repo>/target/release/mailkeep), copied in
#   POSTFIX_DIR=dir   where setup.sh unpacked Postfix (default /var/tmp/mailkeep-postfix)
#   SNIPPETS=dir      the snippets (default <repo>/postfix-snippets; the package test may
#                     pass /usr/share/doc/mailkeep/examples/postfix)
#   SMTP_PORT, SINK_PORT   default the first free ports from 2535/2636; the public listener is
#                     127.0.0.1:SMTP_PORT, the provider listener 127.0.0.4:SMTP_PORT (the same
#                     port on a second address, as the snippet's 192.0.2.25:25 and 192.0.2.26:25)
#   EXPORT_ROOT=dir   copy the filled backup root there at the end (the restore drill,
#                     tests/imap/run-e2e.sh with MAILKEEP_E2E_ROOT, serves it)
#   KEEP_WORK=1       keep the work dir (/tmp/mailkeep-postfix-e2e.XXXXXX) even on success
#   HARNESS_SABOTAGE=no-rcpt-limit   self-test (must FAIL): drops
#                     mailkeep-in_destination_recipient_limit from the snippet
# Output: one line per check; on failure the log, queue and Maildirs; the last line is
# "N passed, M failed". Exit status: 0 only if every check passed.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
EXIMT=$REPO/tests/exim          # send.py, sink.py and e2e_inspect.py are shared
SNIP=${SNIPPETS:-$REPO/postfix-snippets}
ACCOUNTS_EXAMPLE=${ACCOUNTS_EXAMPLE:-$REPO/exim-snippets/accounts.example}
EXSNIP=$(dirname "$ACCOUNTS_EXAMPLE")  # the Exim snippets: accounts.example, the relays scripts
MAILKEEP=${MAILKEEP:-$REPO/target/release/mailkeep}
PFDIR=${POSTFIX_DIR:-/var/tmp/mailkeep-postfix}
PY=/usr/bin/python3
PIPE_USER=mailbackup
SABOTAGE=${HARNESS_SABOTAGE:-}
T0=$(date +%s%N)

OUR=example.com; ADMIN=postmaster@example.com    # as shipped in the snippets (not substituted)
EXT=ext@example.net
PROVIDER_IP=127.0.0.2; OUTSIDE_IP=127.0.0.3
PROVIDER_LISTEN=127.0.0.4   # the relay's second address, where the provider's relays connect

PASS=0; FAIL=0
WORK=; ROOT=; CONF=; SINK=; SINK_PID=; PF_STARTED=0; MASTER_PID=

ok()  { PASS=$((PASS+1)); echo "  ok   - $*"; }
bad() { FAIL=$((FAIL+1)); echo "  FAIL - $*"; }
expect() { if [ "$2" == "$3" ]; then ok "$1 [$3]"; else bad "$1: expected [$2], got [$3]"; fi; }
check() {
    local d=$1 out; shift
    if out=$("$@" 2>&1); then ok "$d"; else bad "$d"; [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/         | /'; fi
}
die() { echo "ERROR: $*" >&2; FAIL=$((FAIL+1)); exit 1; }

# Postfix from the unpacked packages: its commands, and its libraries (RUNPATH is /usr/lib/postfix).
P=$PFDIR/root
export PATH=$P/usr/sbin:$PATH LD_LIBRARY_PATH=$P/usr/lib/postfix
pf() { "$@" 2>&1 | { grep -v 'overriding earlier entry' || true; }; }   # keeps the status (pipefail)

# ------------------------------------------------------------------ teardown
mlog() { cat "$WORK/maillog" 2>/dev/null; }
stop_postfix() {
    [ "$PF_STARTED" = 1 ] || return 0
    pf postfix -c "$CONF" stop >/dev/null
    local i
    for i in $(seq 50); do { [ -n "$MASTER_PID" ] && kill -0 "$MASTER_PID" 2>/dev/null; } || break; sleep 0.1; done
    if [ -n "$MASTER_PID" ] && kill -0 "$MASTER_PID" 2>/dev/null; then
        kill -TERM "$MASTER_PID" 2>/dev/null; sleep 1; kill -KILL "$MASTER_PID" 2>/dev/null
        echo "  (postfix master $MASTER_PID needed a signal)"
    fi
    PF_STARTED=0
}
stop_sink() {
    [ -n "$SINK_PID" ] || return 0
    kill -TERM "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; SINK_PID=
}
dump_logs() {
    echo "================ diagnostics (work dir $WORK) ================"
    echo "---- maillog (last 80 lines) ----"; mlog | grep -v 'overriding earlier entry' | tail -80
    echo "---- queue ----"; [ -d "$WORK/queue" ] && pf postqueue -c "$CONF" -p | head -30
    echo "---- sink transactions ----"
    local f; for f in "$SINK"/*.json; do [ -f "$f" ] && echo "$(basename "$f"): $(cat "$f")"; done
    echo "---- maildirs ----"; (cd "$ROOT" 2>/dev/null && find . -printf '%M %u %p\n' | sort -k3)
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_postfix
    stop_sink
    if [ -n "$WORK" ] && [ -d "$ROOT" ]; then chmod -R u+rwX "$ROOT" 2>/dev/null; fi
    if [ "$FAIL" != 0 ] || [ "$rc" != 0 ]; then
        [ -n "$WORK" ] && dump_logs && echo "work dir kept: $WORK"
    elif [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    echo "== elapsed $(( ($(date +%s%N) - T0) / 1000000 )) ms"
    [ "$rc" != 0 ] && [ "$FAIL" = 0 ] && FAIL=1
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" = 0 ] && exit 0
    exit 1
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 1' INT TERM

# ------------------------------------------------------------------ preconditions
[ "$(id -u)" = 0 ] || die "run as root (Postfix's master starts as root)"
[ -x "$P/usr/sbin/postfix" ] || die "no Postfix unpacked in $PFDIR: run tests/postfix/setup.sh"
postconf -d -h mail_version >/dev/null 2>&1 || die "the unpacked Postfix in $PFDIR does not run"
getent passwd postfix >/dev/null && getent group postdrop >/dev/null || die "user postfix / group postdrop missing: run tests/postfix/setup.sh"
getent passwd "$PIPE_USER" >/dev/null || die "user $PIPE_USER missing: run tests/postfix/setup.sh"
$PY -c 'import aiosmtpd' 2>/dev/null || die "python3-aiosmtpd missing: run tests/postfix/setup.sh"
[ -f "$SNIP/main.cf.fragment" ] && [ -f "$SNIP/master.cf.fragment" ] || die "no snippets in $SNIP"
[ -x "$MAILKEEP" ] || die "mailkeep binary $MAILKEEP missing (cargo build --release, or set MAILKEEP=)"

port_free() { [ -z "$(ss -Hltn "sport = :$1")" ]; }
pick_port() { local p=$1; shift; while ! port_free "$p" || [[ " $* " == *" $p "* ]]; do p=$((p+1)); done; echo "$p"; }
if [ -n "${SMTP_PORT:-}" ]; then port_free "$SMTP_PORT" || die "SMTP_PORT $SMTP_PORT in use"; else SMTP_PORT=$(pick_port 2535); fi
if [ -n "${SINK_PORT:-}" ]; then port_free "$SINK_PORT" || die "SINK_PORT in use"; else SINK_PORT=$(pick_port 2636 "$SMTP_PORT"); fi
PUBLIC=127.0.0.1:$SMTP_PORT; PROVIDER=$PROVIDER_LISTEN:$SMTP_PORT

WORK=$(mktemp -d /tmp/mailkeep-postfix-e2e.XXXXXX)
chmod 755 "$WORK"        # postfix reads the maps, mailbackup runs the binary
CONF=$WORK/conf; ETC=$WORK/etc; ROOT=$WORK/root; SINK=$WORK/sink; MSGS=$WORK/msgs
mkdir -p "$CONF" "$ETC" "$ROOT" "$SINK" "$MSGS" "$WORK"/{bin,queue,data}
chown postfix "$WORK/data"
chown "$PIPE_USER:" "$ROOT"; chmod 750 "$ROOT"
install -m 755 "$MAILKEEP" "$WORK/bin/mailkeep"
setpriv --reuid="$PIPE_USER" --regid="$PIPE_USER" --init-groups "$WORK/bin/mailkeep" init --root "$ROOT" >/dev/null \
    || die "mailkeep init --root $ROOT failed"

echo "== mailkeep Postfix e2e: public $PUBLIC, provider listener $PROVIDER, sink :$SINK_PORT, work dir $WORK"
echo "   postfix $(postconf -d -h mail_version) from $PFDIR; mailkeep: $MAILKEEP ($("$MAILKEEP" --version 2>/dev/null))"

# ------------------------------------------------------------------ P0: config from the snippets
echo "== P0: configuration from the snippets"
# subst FILE OUT OLD NEW [OLD NEW]...: OUT = FILE with each OLD replaced by NEW; each OLD must
# occur. Pairs are separate arguments: an OLD=NEW form split at the first "=" turned
# "mynetworks = ...=mynetworks = ..." into junk (P0 now also checks the values Postfix reads).
subst() {
    local in=$1 out=$2; shift 2
    $PY - "$in" "$out" "$@" <<'PYEOF'
import sys
src, dst, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if len(args) % 2:
    sys.exit("subst: OLD without NEW: %r" % args[-1])
s = open(src).read()
missing = []
for old, new in zip(args[::2], args[1::2]):
    if old not in s:
        missing.append(old)
    s = s.replace(old, new)
open(dst, "w").write(s)
if missing:
    print("not found in %s: %s" % (src, ", ".join(missing)))
    sys.exit(1)
PYEOF
}
cat > "$CONF/main.cf" <<EOF
# The private test instance (tests/postfix/run-e2e.sh): its own directories, the unpacked
# Postfix, loopback only. Then postfix-snippets/main.cf.fragment, substituted.
compatibility_level = 3.6
queue_directory = $WORK/queue
data_directory = $WORK/data
maillog_file = $WORK/maillog
maillog_file_prefixes = /tmp
daemon_directory = $P/usr/lib/postfix/sbin
shlib_directory = $P/usr/lib/postfix
meta_directory = $P/etc/postfix
command_directory = $P/usr/sbin
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH=$P/usr/lib/postfix
myhostname = relay.$OUR
mydomain = $OUR
myorigin = \$myhostname
# Local delivery for localhost only, as a Debian relay keeps it for root's and the system's
# mail; forward_path in the work dir stands for a local user's ~/.forward (P8e).
mydestination = localhost
forward_path = $WORK/fwd/\${user}
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
# "The Internet": everything transport_maps does not route goes to the sink.
relayhost = [127.0.0.1]:$SINK_PORT
EOF
check "main.cf.fragment: only paths and the trusted network substituted" \
    subst "$SNIP/main.cf.fragment" "$WORK/main.fragment" "/etc/postfix/mailkeep/" "$ETC/" \
    "mynetworks = 127.0.0.0/8 [::1]/128" "mynetworks = 127.0.0.1/32"
if [ "$SABOTAGE" = no-rcpt-limit ]; then
    sed -i '/^mailkeep-in_destination_recipient_limit/d' "$WORK/main.fragment"; echo "   !! HARNESS_SABOTAGE=no-rcpt-limit"
fi
cat "$WORK/main.fragment" >> "$CONF/main.cf"
cat > "$CONF/master.cf" <<EOF
# The private test instance: Debian's stock services (chroot n), the public port on
# loopback, then postfix-snippets/master.cf.fragment, substituted.
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
check "master.cf.fragment: only paths and the provider port substituted" \
    subst "$SNIP/master.cf.fragment" "$WORK/master.fragment" "/etc/postfix/mailkeep/" "$ETC/" \
    "/usr/bin/mailkeep" "$WORK/bin/mailkeep" "/var/lib/mailkeep" "$ROOT" "192.0.2.26:25 inet" "$PROVIDER inet"
cat "$WORK/master.fragment" >> "$CONF/master.cf"
# The master.cf edits the snippet asks for beyond appending (pickup and local ->
# cleanup-local), run as the fragment's comments word them.
PCMDS=$(sed -nE "s/^#[[:space:]]+(postconf -P '[^']+')[[:space:]]*$/\1/p" "$WORK/master.fragment")
for svc in pickup local; do
    cmd=$(grep -F "'$svc/unix/" <<<"$PCMDS")
    check "master.cf.fragment: the postconf -P line for $svc (${cmd:-none}) runs" \
        env MAIL_CONFIG="$CONF" sh -c "${cmd:-false}"
done
# The maps: the shipped examples, the provider's MX and relays pointed at the test.
check "transport.example: only the provider's MX substituted" \
    subst "$SNIP/transport.example" "$ETC/transport" "smtp:[smtp.google.com]:25" "smtp:[127.0.0.1]:$SINK_PORT"
cp "$SNIP/recipient-access.pcre" "$ETC/"
cp "$SNIP/refuse-internal.pcre" "$ETC/" 2>/dev/null
# The provider's relays: Microsoft 365's Exchange ranges as the M365 script writes them for
# Postfix (from a saved sample of the endpoints JSON; IPv6 in brackets, which Postfix must
# take), plus the fake provider.
RELAYS=$ETC/provider-relays FORMAT=postfix ENDPOINTS_FILE=$HERE/m365-endpoints.sample.json \
    "$EXSNIP/update-provider-relays-m365.example.sh" >/dev/null 2>"$WORK/m365.err"
expect "update-provider-relays-m365.example.sh: serviceArea Exchange, TCP 25, IPv6 bracketed for Postfix" \
    "40.92.0.0/15 40.107.0.0/16 52.100.0.0/14 52.238.78.88/32 104.47.0.0/17 [2a01:111:f400::]/48 [2a01:111:f403::]/48" \
    "$(grep -v '^#' "$ETC/provider-relays" 2>/dev/null | tr '\n' ' ' | sed 's/ $//')$(cat "$WORK/m365.err")"
printf '{"not": "a list"}' > "$WORK/bad.json"
cp "$ETC/provider-relays" "$WORK/relays.before"
RELAYS=$ETC/provider-relays ENDPOINTS_FILE=$WORK/bad.json "$EXSNIP/update-provider-relays-m365.example.sh" >/dev/null 2>&1
expect "update-provider-relays-m365.example.sh: bad JSON -> exit 1, file kept, no temp file" "1 same" \
    "$? $(cmp -s "$WORK/relays.before" "$ETC/provider-relays" && echo same)$(ls "$ETC" | grep '\.new\.')"
# A range wider than /8 (IPv4) or /16 (IPv6), e.g. 0.0.0.0/0, would let anybody relay and
# make Sent copies: both scripts refuse it, one line, file kept.
cp "$ETC/provider-relays" "$WORK/relays.before"
printf '[{"id": 1, "serviceArea": "Exchange", "tcpPorts": "25", "ips": ["40.92.0.0/15", "0.0.0.0/0", "40.107.0.0/16", "52.100.0.0/14"]}]' > "$WORK/wide4.json"
printf '[{"id": 1, "serviceArea": "Exchange", "tcpPorts": "25", "ips": ["40.92.0.0/15", "::/0", "40.107.0.0/16", "52.100.0.0/14"]}]' > "$WORK/wide6.json"
for j in wide4 wide6; do
    out=$(RELAYS=$ETC/provider-relays FORMAT=postfix ENDPOINTS_FILE=$WORK/$j.json "$EXSNIP/update-provider-relays-m365.example.sh" 2>&1)
    expect "update-provider-relays-m365.example.sh: $j range -> exit 1, one line, file kept" "1 1 same" \
        "$? $(grep -c . <<<"$out") $(cmp -s "$WORK/relays.before" "$ETC/provider-relays" && echo same)$(ls "$ETC" | grep '\.new\.')"
done
printf '#!/bin/sh\ncase "$*" in *_spf.test*) echo "\\"v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 ip4:0.0.0.0/0 ip6:2001:db8::/32 ip6:::/0 ~all\\"";; esac\n' > "$WORK/fakedig"
chmod 755 "$WORK/fakedig"
for min in "" "MIN_PREFIX4=0"; do
    out=$(env $min RELAYS=$ETC/provider-relays FORMAT=postfix MIN_RANGES=1 DIG=$WORK/fakedig "$EXSNIP/update-provider-relays.example.sh" _spf.test 2>&1)
    expect "update-provider-relays.example.sh: ip4:0.0.0.0/0 ${min:+($min) }-> exit 1, one line, file kept" "1 1 same" \
        "$? $(grep -c . <<<"$out") $(cmp -s "$WORK/relays.before" "$ETC/provider-relays" && echo same)$(ls "$ETC" | grep '\.new\.')"
done
printf '# test only: the fake provider\n%s\n' "$PROVIDER_IP" >> "$ETC/provider-relays"
cp "$ACCOUNTS_EXAMPLE" "$ETC/accounts"
# A stale map: "ghost" was removed from the accounts file, the maps were not rebuilt yet,
# so mailkeep refuses the copy (67, permanent): the admin must hear of it, the sender not.
{ cat "$ETC/accounts"; echo ghost; } > "$WORK/accounts.stale"
chmod 644 "$ETC"/*
check "postmap transport" pf postmap -c "$CONF" "hash:$ETC/transport"
check "make-maps.sh builds recipient_bcc and sender_bcc" pf "$SNIP/make-maps.sh" "$WORK/accounts.stale" "$OUR" "$ETC" "$CONF"
expect "make-maps.sh: recipient_bcc" "alice@$OUR alice@inbox.mailkeep.invalid|ghost@$OUR ghost@inbox.mailkeep.invalid" \
    "$(grep -E '^(alice|ghost)@' "$ETC/recipient_bcc" | tr '\n' '|' | sed 's/|$//')"
expect "make-maps.sh: no temp dir left" "" "$(ls -d "$ETC"/.make-maps.* 2>/dev/null)"
check "postfix check (creates the private queue)" pf postfix -c "$CONF" check
# What the substitutions made of the fragment, as Postfix reads it (the last setting wins).
expect "postconf: mynetworks (test value substituted)" "127.0.0.1/32" "$(pf postconf -c "$CONF" -h mynetworks)"
expect "postconf: relay_domains as shipped" "$OUR" "$(pf postconf -c "$CONF" -h relay_domains)"
expect "postconf -P: cleanup-sent/unix/sender_bcc_maps" "cleanup-sent/unix/sender_bcc_maps = hash:$ETC/sender_bcc" \
    "$(pf postconf -c "$CONF" -P cleanup-sent/unix/sender_bcc_maps)"
expect "postconf -F: mailkeep-in runs as mailbackup" "mailkeep-in/unix/command = pipe flags=qu user=mailbackup null_sender=" \
    "$(pf postconf -c "$CONF" -F mailkeep-in/unix/command | cut -d' ' -f1-6)"

# ------------------------------------------------------------------ start
"$PY" "$EXIMT/sink.py" 127.0.0.1 "$SINK_PORT" "$SINK" "$WORK/sink.pid" > "$WORK/sink.out" 2>&1 &
SINK_PID=$!
pf postfix -c "$CONF" start >/dev/null && PF_STARTED=1
for i in $(seq 50); do
    [ -s "$WORK/queue/pid/master.pid" ] && [ "$(ss -Hltn "sport = :$SMTP_PORT" | wc -l)" = 2 ] && [ -s "$WORK/sink.pid" ] && break
    sleep 0.1
done
MASTER_PID=$(tr -d ' ' < "$WORK/queue/pid/master.pid" 2>/dev/null)
check "postfix master running (pid $MASTER_PID)" kill -0 "$MASTER_PID"
expect "postfix listens on the public and the provider address, the same port" "$PUBLIC $PROVIDER" \
    "$(ss -Hltnp | grep "pid=$MASTER_PID," | awk '{print $4}' | sort -t: -k2n | tr '\n' ' ' | sed 's/ $//')"
check "sink listening on 127.0.0.1:$SINK_PORT" test -s "$WORK/sink.pid"
[ "$FAIL" = 0 ] || exit 1

# ------------------------------------------------------------------ helpers
wait_log() {   # wait_log ERE [timeout_s]
    local i n=$(( ${2:-10} * 10 ))
    for i in $(seq "$n"); do mlog | grep -Eq -- "$1" && return 0; sleep 0.1; done
    return 1
}
done_q() { wait_log " $1: removed" "${2:-10}"; }   # every recipient of the queue file is done
send() {   # send CASE BIND HOST:PORT FROM RCPTS (message on stdin) -> queue id
    local case=$1 f=$MSGS/$1.eml out rc
    cat > "$f"
    out=$($PY "$EXIMT/send.py" --bind "$2" --server "$3" --from "$4" --rcpt "$5" --data "$f"); rc=$?
    echo "$out" > "$MSGS/$case.result"
    if [ $rc = 0 ]; then echo "${out#QUEUEID }"; else echo "NOID-$case"; fi
    return $rc
}
msg() {  # msg KEY FROM TO [CC]
    printf 'From: %s\nTo: %s\n' "$2" "$3"
    [ -n "${4:-}" ] && printf 'Cc: %s\n' "$4"
    printf 'Subject: mailkeep postfix e2e %s\nDate: Thu, 01 Jan 2026 12:00:00 +0000\n' "$1"
    printf 'Message-ID: <pf-e2e-%s@client.test>\nMIME-Version: 1.0\n' "$1"
    printf 'Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n'
    printf 'Body of %s.\nFrom the body: an mbox-style From_ line, not escaped.\n' "$1"
    printf '.a line starting with a dot\n..two dots\nGr\303\274\303\237e, trailing spaces   \n\nlast line\n'
}
qre() { printf '%s' "$1" | sed 's/[.[\*^$+?(){}|/]/\\&/g'; }
sinkq()    { $PY "$EXIMT/e2e_inspect.py" sink "$SINK" "$1"; }
nsink()    { sinkq "$1" | grep -c .; }
sink_rcpts() { sinkq "$1" | cut -f3 | tr ',' '\n' | grep . | sort | tr '\n' ' ' | sed 's/ $//'; }
sink_from()  { sinkq "$1" | cut -f2 | sort -u | tr '\n' ' ' | sed 's/ $//'; }
sink_file()  { sinkq "$1" | awk -F'\t' 'NR == 1 {print $1}'; }
bounces()    { $PY "$EXIMT/e2e_inspect.py" bounces "$SINK" "$1"; }
notices() {  # notices QID -> "RCPTS" of the postmaster notices (from double-bounce@) quoting QID
    $PY - "$SINK" "$1" <<'PYEOF'
import glob, json, sys
out = []
for j in sorted(glob.glob(sys.argv[1] + "/*.json")):
    meta = json.load(open(j))
    if meta["mail_from"].startswith("double-bounce@") and sys.argv[2].encode() in open(j[:-5] + ".eml", "rb").read():
        out += meta["rcpt_tos"]
print(" ".join(sorted(out)))
PYEOF
}
copies()   { $PY "$EXIMT/e2e_inspect.py" maildir "$ROOT" "$1"; }
copies_of() { copies "$1" | awk -F'\t' -v u="$2" -v f="$3" '$1==u && $2==f {print $3}'; }
where()    { copies "$1" | awk -F'\t' '{print $1 "/" $2}' | sort | tr '\n' ' ' | sed 's/ $//'; }
hdr()      { $PY "$EXIMT/e2e_inspect.py" header "$1" "$2"; }
qcount()   { pf postqueue -c "$CONF" -j | grep -c '"queue_id"'; }
check_copy() {   # check_copy DESC FILE SINKFILE EXPECTED-ADDED
    local d=$1 f=$2 s=$3 want=$4 out
    if [ -z "$f" ] || [ -z "$s" ]; then bad "$d: copy or sink file missing"; return; fi
    out=$($PY "$EXIMT/e2e_inspect.py" added "$f" "$s"); local rc=$?
    if [ $rc = 0 ] && [ "$(head -1 <<<"$out")" = "$want" ]; then
        ok "$d: identical to the sink's copy apart from the added $want"
    else
        bad "$d: expected [added $want + sink copy], got:"; sed 's/^/         | /' <<<"$out"
    fi
    check "$d: Maildir file name and S= size" $PY "$EXIMT/e2e_inspect.py" name "$f"
    expect "$d: owner:mode" "$PIPE_USER:600" "$(stat -c '%U:%a' "$f")"
}

# ------------------------------------------------------------------ P1: inbound To/Cc/Bcc
echo "== P1: inbound $EXT -> alice (To), bob (Cc), carol (Bcc)"
P1=$(msg in "$EXT" "alice@$OUR" "bob@$OUR" | send P1 "$OUTSIDE_IP" "$PUBLIC" "$EXT" "alice@$OUR,bob@$OUR,carol@$OUR")
check "P1 accepted ($P1)" test "${P1#NOID}" = "$P1"
check "P1 done" done_q "$P1"
expect "P1: sink got the message once, original envelope" "1 $EXT | alice@$OUR bob@$OUR carol@$OUR" \
    "$(nsink "$P1") $(sink_from "$P1") | $(sink_rcpts "$P1")"
expect "P1: stored copies, one each" "alice/INBOX bob/INBOX carol/INBOX" "$(where "$P1")"
s=$(sink_file "$P1")
for u in alice bob carol; do
    f=$(copies_of "$P1" $u INBOX)
    check_copy "P1 $u" "$f" "$s" "Return-Path,Delivered-To"
    expect "P1 $u: Return-Path, Delivered-To (the real recipient, \${mailbox}@\${nexthop})" "<$EXT> $u@$OUR" \
        "$(hdr "$f" Return-Path) $(hdr "$f" Delivered-To)"
    check "P1 $u: log: sent via mailkeep-in" \
        wait_log "$P1: to=<$u@inbox\.mailkeep\.invalid>, relay=mailkeep-in, .*dsn=2\.0\.0, status=sent"
done
check "P1: Bcc recipient not in the headers" bash -c "! grep -qi '^bcc:' '$(copies_of "$P1" carol INBOX)'"

# ------------------------------------------------------------------ P2: unlisted
echo "== P2: inbound to an unlisted local part (zed@$OUR)"
P2=$(msg unlisted "$EXT" "zed@$OUR" | send P2 "$OUTSIDE_IP" "$PUBLIC" "$EXT" "zed@$OUR")
check "P2 done" done_q "$P2"
expect "P2: relayed, no copy" "$EXT | zed@$OUR | 0" "$(sink_from "$P2") | $(sink_rcpts "$P2") | $(copies "$P2" | grep -c .)"
expect "P2: log: no mailkeep delivery" 0 "$(mlog | grep " $P2: " | grep -c 'relay=mailkeep')"

# ------------------------------------------------------------------ P3: outbound via the provider
echo "== P3: outbound alice@$OUR from the provider ($PROVIDER_IP to $PROVIDER) -> $EXT (To), bob (Cc), carol (Bcc)"
P3=$(msg out "alice@$OUR" "$EXT" "bob@$OUR" | send P3 "$PROVIDER_IP" "$PROVIDER" "alice@$OUR" "$EXT,bob@$OUR,carol@$OUR")
check "P3 accepted from the provider ($P3)" test "${P3#NOID}" = "$P3"
check "P3 done" done_q "$P3"
expect "P3: relayed once, every recipient" "1 alice@$OUR | bob@$OUR carol@$OUR $EXT" \
    "$(nsink "$P3") $(sink_from "$P3") | $(sink_rcpts "$P3")"
expect "P3: one Sent copy; INBOX copies for bob, carol" "alice/.Sent bob/INBOX carol/INBOX" "$(where "$P3")"
s=$(sink_file "$P3")
f=$(copies_of "$P3" alice .Sent)
check_copy "P3 alice .Sent" "$f" "$s" "Return-Path,Delivered-To"
expect "P3 .Sent: no Envelope-To under Postfix (the pipe cannot see the recipients)" "" "$(hdr "$f" Envelope-To)"
for u in bob carol; do check_copy "P3 $u" "$(copies_of "$P3" $u INBOX)" "$s" "Return-Path,Delivered-To"; done
check "P3: log: sent via mailkeep-out" wait_log "$P3: to=<alice@sent\.mailkeep\.invalid>, relay=mailkeep-out, .*status=sent"

# ------------------------------------------------------------------ P4: not the provider
echo "== P4: alice@$OUR from $OUTSIDE_IP (not the provider)"
msg spoof "alice@$OUR" "ext2@example.org" | send P4a "$OUTSIDE_IP" "$PUBLIC" "alice@$OUR" "ext2@example.org" >/dev/null
expect "P4a: relaying from the public port refused (send.py exit 2)" 2 "$?"
check "P4a: 554 Relay access denied" grep -q '554 5.7.1 .*Relay access denied' "$MSGS/P4a.result"
msg spoof-p "alice@$OUR" "ext2@example.org" | send P4b "$OUTSIDE_IP" "$PROVIDER" "alice@$OUR" "ext2@example.org" >/dev/null
expect "P4b: the provider listener refuses other clients (send.py exit 2)" 2 "$?"
check "P4b: 554 Client host rejected" grep -q '554 5.7.1 .*Client host rejected' "$MSGS/P4b.result"
P4=$(msg spoof-in "alice@$OUR" "bob@$OUR" | send P4c "$OUTSIDE_IP" "$PUBLIC" "alice@$OUR" "bob@$OUR")
check "P4c: spoofed sender to our own domain: accepted, done" done_q "$P4"
expect "P4c: no Sent copy, only bob's INBOX copy" "bob/INBOX" "$(where "$P4")"
for port in "$PUBLIC" "$PROVIDER"; do
    bind=$OUTSIDE_IP; [ "$port" = "$PROVIDER" ] && bind=$PROVIDER_IP
    msg direct "$EXT" "x@$OUR" | send "P4d$port" "$bind" "$port" "$EXT" "alice@inbox.mailkeep.invalid" >/dev/null
    # (on the public port the relay check refuses it first)
    check "P4d: RCPT to alice@inbox.mailkeep.invalid refused on port $port" grep -Eq 'internal address|Relay access denied' "$MSGS/P4d$port.result"
    # A sender in the copy domains: a bounce or DSN to it would land in a backup.
    msg fromint "$EXT" "zed@$OUR" | send "P4f$port" "$bind" "$port" "alice@sent.mailkeep.invalid" "zed@$OUR" >/dev/null
    check "P4f: MAIL FROM:<alice@sent.mailkeep.invalid> refused on port $port" grep -q 'internal address' "$MSGS/P4f$port.result"
done
P4e=$(msg unlisted-sender "zed@$OUR" "$EXT" | send P4e "$PROVIDER_IP" "$PROVIDER" "zed@$OUR" "$EXT")
check "P4e: unlisted sender via the provider: done" done_q "$P4e"
expect "P4e: relayed, no copy" "1 0" "$(nsink "$P4e") $(copies "$P4e" | grep -c .)"

# ------------------------------------------------------------------ P5: null sender
echo "== P5: a bounce (null sender <>) for alice"
P5=$(msg bounce "MAILER-DAEMON@example.net" "alice@$OUR" | send P5 "$OUTSIDE_IP" "$PUBLIC" "" "alice@$OUR")
check "P5 done" done_q "$P5"
f=$(copies_of "$P5" alice INBOX)
expect "P5: one copy, Return-Path <>" "alice/INBOX <>" "$(where "$P5") $(hdr "$f" Return-Path)"
check_copy "P5 alice" "$f" "$(sink_file "$P5")" "Return-Path,Delivered-To"
expect "P5: relayed with the null sender" "<> | alice@$OUR" "$(sink_from "$P5") | $(sink_rcpts "$P5")"

# ------------------------------------------------------------------ P6: backup root unwritable
echo "== P6: backup root unwritable -> deferred (75), relayed once, stored once after postqueue -i"
find "$ROOT" -type d -printf '%m %p\n' > "$WORK/modes"
find "$ROOT" -type d -exec chmod a-w {} +
P6=$(msg unwritable "$EXT" "bob@$OUR" "dave@$OUR" | send P6 "$OUTSIDE_IP" "$PUBLIC" "$EXT" "bob@$OUR,dave@$OUR")
check "P6 accepted ($P6)" test "${P6#NOID}" = "$P6"
for u in bob dave; do
    check "P6: $u deferred (4.3.0)" wait_log "$P6: to=<$u@inbox\.mailkeep\.invalid>, relay=mailkeep-in, .*dsn=4\.3\.0, status=deferred"
done
check "P6: relayed to the provider in the same run" wait_log "$P6: to=<(bob|dave)@$(qre "$OUR")>, relay=127\.0\.0\.1.*status=sent"
sleep 0.3
expect "P6: sink got it once, nothing stored, still queued, no bounce" "1 | 1 | " \
    "$(nsink "$P6") | $(where "$P6")$(qcount) | $(bounces "$P6")"
while read -r m p; do chmod "$m" "$p"; done < "$WORK/modes"
pf postqueue -c "$CONF" -i "$P6" >/dev/null
check "P6: postqueue -i delivered the copies" done_q "$P6" 15
expect "P6: stored once each" "bob/INBOX dave/INBOX" "$(where "$P6")"
for u in bob dave; do check_copy "P6 $u" "$(copies_of "$P6" $u INBOX)" "$(sink_file "$P6")" "Return-Path,Delivered-To"; done
expect "P6: relay not repeated, no bounce" "1 " "$(nsink "$P6") $(bounces "$P6")"

# ------------------------------------------------------------------ P6s: a symlink planted below the root
# mailkeep exited 73 for this until issue 23, which Postfix bounces (5.2.0): the copy was
# lost. Now 75: deferred, and stored by the retry once the admin has removed the link.
echo "== P6s: a symlink planted as erin's Maildir -> deferred (75, not 73), nothing written through it"
mkdir -p "$WORK/outside"; chmod 777 "$WORK/outside"
ln -s "$WORK/outside" "$ROOT/erin"
P6s=$(msg symlink "$EXT" "erin@$OUR" | send P6s "$OUTSIDE_IP" "$PUBLIC" "$EXT" "erin@$OUR")
check "P6s: erin deferred (4.3.0), not bounced" \
    wait_log "$P6s: to=<erin@inbox\.mailkeep\.invalid>, relay=mailkeep-in, .*dsn=4\.3\.0, status=deferred"
check "P6s: relayed" wait_log "$P6s: to=<erin@$(qre "$OUR")>, relay=127\.0\.0\.1.*status=sent"
expect "P6s: nothing written through the link, still queued, no bounce, no notice" "|1||" \
    "$(ls -A "$WORK/outside")|$(qcount)|$(bounces "$P6s")|$(notices "$P6s")"
rm "$ROOT/erin"
pf postqueue -c "$CONF" -i "$P6s" >/dev/null
check "P6s: stored by the retry after the link was removed" done_q "$P6s" 15
expect "P6s: stored once" "erin/INBOX" "$(where "$P6s")"

# ------------------------------------------------------------------ P7: permanent failure
echo "== P7: a copy mailkeep refuses for good (ghost: in the stale map, not in --accounts)"
P7=$(msg refused "$EXT" "ghost@$OUR" | send P7 "$OUTSIDE_IP" "$PUBLIC" "$EXT" "ghost@$OUR")
check "P7: the copy bounced (5.1.1, mailkeep exit 67)" \
    wait_log "$P7: to=<ghost@inbox\.mailkeep\.invalid>, relay=mailkeep-in, .*dsn=5\.1\.1, status=bounced"
check "P7: relayed anyway" wait_log "$P7: to=<ghost@$(qre "$OUR")>, relay=127\.0\.0\.1.*status=sent"
check "P7: postmaster notification generated" wait_log "$P7: postmaster non-delivery notification: "
B7=$(mlog | sed -nE "s/.* $P7: postmaster non-delivery notification: (\S+).*/\1/p" | head -1)
check "P7: notification delivered" done_q "$B7"
check "P7: done" done_q "$P7"
expect "P7: the admin got a Postmaster Copy quoting the message" "$ADMIN" "$(notices "$P7")"
expect "P7: nothing to the sender (no bounce at the sink, no sender notification in the log)" "|0" \
    "$(bounces "$P7")|$(mlog | grep " $P7: " | grep -c 'sender non-delivery')"
f=$(for j in "$SINK"/*.json; do grep -q '"double-bounce@' "$j" && grep -l "$P7" "${j%.json}.eml"; done | head -1)
check "P7: the notice says why (mailkeep's line)" grep -q "not listed in" "$f"

# ------------------------------------------------------------------ P9: address extensions
# recipient_delimiter = +: the bcc maps fall back from alice+tag@ to alice@. Without it
# alice+tag@ got no copy (and "-" would file alice-smith@ under alice).
echo "== P9: address extensions (recipient_delimiter = +)"
P9=$(msg ext-in "$EXT" "alice+tag@$OUR" | send P9 "$OUTSIDE_IP" "$PUBLIC" "$EXT" "alice+tag@$OUR")
check "P9 done" done_q "$P9"
expect "P9: alice+tag@ -> one INBOX copy for alice; relayed to alice+tag@ unchanged" "alice/INBOX | alice+tag@$OUR" \
    "$(where "$P9") | $(sink_rcpts "$P9")"
f=$(copies_of "$P9" alice INBOX)
check_copy "P9 alice" "$f" "$(sink_file "$P9")" "Return-Path,Delivered-To"
P9b=$(msg ext-out "alice+x@$OUR" "$EXT" | send P9b "$PROVIDER_IP" "$PROVIDER" "alice+x@$OUR" "$EXT")
check "P9b done" done_q "$P9b"
expect "P9b: sender alice+x@ from the provider -> alice's Sent copy" "alice/.Sent <alice+x@$OUR>" \
    "$(where "$P9b") $(hdr "$(copies_of "$P9b" alice .Sent)" Return-Path)"
P9c=$(msg ext-dash "$EXT" "alice-smith@$OUR" | send P9c "$OUTSIDE_IP" "$PUBLIC" "$EXT" "alice-smith@$OUR")
check "P9c done" done_q "$P9c"
expect "P9c: alice-smith@ (unlisted) -> relayed, no copy" "1 " "$(nsink "$P9c") $(where "$P9c")"

# ------------------------------------------------------------------ P10: a large message
# Postfix's default message_size_limit is 10 MB; the snippet sets 50 MB (Google takes 25 MB
# sent, 50 MB received).
echo "== P10: an 11 MB message to bob: accepted, relayed and copied"
P10=$( { msg big "$EXT" "bob@$OUR" | sed '$d'
         $PY -c 'import sys
line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/0123456789abcd\n"
sys.stdout.buffer.write(line * (11 * 1024 * 1024 // len(line) + 1))'; } \
       | send P10 "$OUTSIDE_IP" "$PUBLIC" "$EXT" "bob@$OUR")
check "P10 accepted ($P10)" test "${P10#NOID}" = "$P10"
check "P10 done" done_q "$P10" 30
f=$(copies_of "$P10" bob INBOX)
expect "P10: relayed once, one copy of more than 11 MB" "1 bob/INBOX yes" \
    "$(nsink "$P10") $(where "$P10") $([ "$(stat -c %s "$f" 2>/dev/null || echo 0)" -gt 11534336 ] && echo yes)"
check_copy "P10 bob" "$f" "$(sink_file "$P10")" "Return-Path,Delivered-To"

# ------------------------------------------------------------------ P8: local submission
# sendmail/postdrop -> pickup -> cleanup never passes smtpd's check_recipient_access: without
# cleanup-local a local user wrote a forged Sent or INBOX copy into any listed user's backup.
# (As root: the unpacked postdrop is not set-gid, and sendmail passes postdrop only
# export_environment, hence a client main.cf that adds the library path.)
echo "== P8: local submission (sendmail -> pickup) cannot reach the copy domains"
mkdir -p "$WORK/client"
{ cat "$CONF/main.cf"; echo "export_environment = TZ MAIL_CONFIG LANG LD_LIBRARY_PATH=$P/usr/lib/postfix"; } > "$WORK/client/main.cf"
P8_QIDS=
local_send() {   # local_send KEY SENDER RCPT... -> queue id (from cleanup's message-id line)
    local key=$1 from=$2 i qid=; shift 2
    msg "$key" "$from" "$1" | MAIL_CONFIG=$WORK/client sendmail -f "$from" "$@" 2>>"$WORK/sendmail.err" || { echo "NOID-$key"; return 1; }
    for i in $(seq 100); do
        qid=$(mlog | sed -nE "s/.* ([0-9A-F]+): message-id=<pf-e2e-$key@client\.test>.*/\1/p" | head -1)
        [ -n "$qid" ] && break; sleep 0.1
    done
    echo "${qid:-NOID-$key}"
}
n0=$($PY "$EXIMT/e2e_inspect.py" count "$ROOT")
P8a=$(local_send local-sent "alice@$OUR" alice@sent.mailkeep.invalid)
P8b=$(local_send local-inbox "$EXT" bob@inbox.mailkeep.invalid)
P8c=$(local_send local-from-int alice@inbox.mailkeep.invalid nobody@inbox.mailkeep.invalid)
P8d=$(local_send local-out "alice@$OUR" "$EXT")
# A local user's ~/.forward naming a copy address: local(8) resubmits to its cleanup service.
mkdir -p "$WORK/fwd"; echo alice@sent.mailkeep.invalid > "$WORK/fwd/nobody"; chmod -R a+rX "$WORK/fwd"
P8e=$(local_send local-fwd "alice@$OUR" nobody@localhost)
# sendmail -bs: a stand-alone smtpd whose access controls are off for anyone but the mail
# owner; it submits through postdrop, so pickup and cleanup-local see it.
{ printf 'HELO local\r\nMAIL FROM:<alice@%s>\r\nRCPT TO:<alice@sent.mailkeep.invalid>\r\nDATA\r\n' "$OUR"
  msg local-bs "alice@$OUR" "$EXT" | sed 's/$/\r/'; printf '.\r\nQUIT\r\n'; } \
    | MAIL_CONFIG=$WORK/client sendmail -bs > "$MSGS/P8f.result" 2>&1
P8f=
for i in $(seq 100); do
    P8f=$(mlog | sed -nE "s/.* ([0-9A-F]+): message-id=<pf-e2e-local-bs@client\.test>.*/\1/p" | head -1)
    [ -n "$P8f" ] && break; sleep 0.1
done
P8f=${P8f:-NOID-local-bs}
P8_QIDS="$P8a|$P8b|$P8c|$P8d|$P8e|$P8f"
for q in "$P8a" "$P8b" "$P8c" "$P8d" "$P8e" "$P8f"; do check "P8: $q submitted and done" done_q "$q" 15; done
sleep 0.5
expect "P8a: sendmail to alice@sent.mailkeep.invalid: no copy" "" "$(where "$P8a")"
expect "P8b: sendmail to bob@inbox.mailkeep.invalid: no copy" "" "$(where "$P8b")"
expect "P8c: sendmail from alice@inbox.mailkeep.invalid: no copy (nor of its bounce)" "" "$(where "$P8c")"
check "P8e: local(8) forwarded nobody@localhost's mail" wait_log "$P8e: to=<nobody@localhost>, relay=local, .*status=sent \\(forwarded as "
F8e=$(mlog | sed -nE "s/.* $P8e: to=<nobody@localhost>, relay=local, .*forwarded as ([0-9A-F]+).*/\\1/p" | head -1)
P8_QIDS="$P8_QIDS${F8e:+|$F8e}"
check "P8e: the forwarded copy done" done_q "${F8e:-none}" 15
expect "P8f: sendmail -bs to alice@sent.mailkeep.invalid: no copy" "" "$(where "$P8f")"
expect "P8e: ~/.forward to alice@sent.mailkeep.invalid: no copy" "" "$(where "$P8e")$(where "${F8e:-none}")"
expect "P8a-c, e: no file added to any Maildir" "$n0" "$($PY "$EXIMT/e2e_inspect.py" count "$ROOT")"
check "P8a: refused in the log (bounced, not delivered by mailkeep)" \
    wait_log "$P8a: to=<refused@refused\.mailkeep\.invalid>, orig_to=<alice@sent\.mailkeep\.invalid>, relay=none, .*status=bounced"
check "P8c: the bounce to the (rewritten) internal sender is refused too" \
    wait_log "$P8c: sender non-delivery notification: "
expect "P8a-c, e: no mailkeep delivery in the log" 0 "$(mlog | grep -E " ($P8a|$P8b|$P8c|$P8e|${F8e:-none}|$P8f): " | grep -c 'relay=mailkeep')"
expect "P8d: local mail to an outside address still relayed (no copy)" "1 alice@$OUR | $EXT | " \
    "$(nsink "$P8d") $(sink_from "$P8d") | $(sink_rcpts "$P8d") | $(where "$P8d")"

# ------------------------------------------------------------------ end
echo "== end"
if [ -n "${EXPORT_ROOT:-}" ]; then
    rm -rf "$EXPORT_ROOT" && cp -a "$ROOT" "$EXPORT_ROOT"
    check "backup root exported to $EXPORT_ROOT" test -d "$EXPORT_ROOT"
fi
expect "queue empty" 0 "$(qcount)"
expect "no other bounce or deferral left (log)" "" \
    "$(mlog | grep -E 'status=(bounced|deferred)' | grep -vE " ($P6|P6s|$P6s|$P7|$P8_QIDS): " | grep -v 'to=<refused@refused\.mailkeep\.invalid>')"
expect "no fatal or panic in the log" "" "$(mlog | grep -E 'fatal:|panic:')"
stop_postfix
check "postfix master stopped" bash -c "! kill -0 '$MASTER_PID' 2>/dev/null"
stop_sink
sleep 0.2
expect "no process left running from the work dir" "" \
    "$(ps -eo pid=,stat=,args= | awk '$2 !~ /^Z/' | grep -F "$WORK" | grep -v grep)"
# Another instance may run from the same unpacked prefix (a second test run, the package
# test): only daemons whose MAIL_CONFIG is this run's count.
ours_left() {
    local pid
    for pid in $(pgrep -f "^$P/usr/lib/postfix/sbin/" || true); do
        tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qxF "MAIL_CONFIG=$CONF" && echo "$pid"
    done
    return 0
}
expect "no Postfix daemon of this run left running" "" "$(ours_left)"
expect "ports free again" "" "$(ss -Hltn "( sport = :$SMTP_PORT or sport = :$SINK_PORT )")"
