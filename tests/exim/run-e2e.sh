#!/bin/bash
# End-to-end test of exim-snippets/ with the real Exim (Debian 12
# exim4-daemon-light 4.96) and the real mailkeep binary.
#
# It starts, on loopback only:
#   * Exim, with a config built from exim-snippets/exim4.conf.example where only
#     paths, ports and the provider's hosts are substituted (each substituted
#     line is checked to exist exactly once, and nothing else may differ);
#   * a fake provider: an SMTP sink on 127.0.0.2:SINK_PORT (sink.py) that keeps
#     what it receives; it is both the provider's MX and the smarthost;
#   * clients (send.py): 127.0.0.2 plays the provider's outbound relay (the test
#     copy of exim-snippets/provider-relays gets 127.0.0.2 appended), 127.0.0.3
#     plays the rest of the Internet.
# It also checks that the Debian split files (exim-snippets/debian/conf.d/),
# assembled with update-exim4.conf over Debian's stock conf.d, give the same
# mailkeep routers, transports, host/domain lists and retry rule (exim -bV, -bP).
# Then it runs the scenarios and asserts from the Maildirs, the sink and Exim's
# logs; S10 runs S1 and S3 again through the snippets' commented-out lmtp transports
# into `mailkeep lmtp`. Everything it starts it stops (pid files); ports are checked free.
#
# Usage (as root, after tests/exim/setup.sh and cargo build --release):
#   tests/exim/run-e2e.sh
# Env:
#   MAILKEEP=path     mailkeep binary (default: <repo>/target/release/mailkeep);
#                     copied into the work dir, mode 755, so mailbackup can run it
#   SMTP_PORT, SINK_PORT   ports (default: first free port from 2525 / 2626)
#   SNIPPETS=dir      the snippets to test (default: <repo>/exim-snippets; the
#                     package test passes /usr/share/doc/mailkeep/examples)
#   EXPORT_ROOT=dir   copy the filled backup root there at the end (the restore
#                     test serves it with Dovecot and Courier)
#   KEEP_WORK=1       keep the work dir (/tmp/mailkeep-e2e.XXXXXX) even on success
#   HARNESS_SABOTAGE  self-test, proves the test can fail (not for CI; the run
#                     must then FAIL):
#                       no-unseen  drop "unseen" from the mailkeep routers
#                                  (the relay copies go missing)
#                       no-batch   drop "batch_max" from mailkeep_sent
#                                  (one Sent copy per recipient)
#                       return-path-add  add return_path_add to the mailkeep
#                                  transports (a second Return-path line)
# Output: one line per check; on failure Exim's logs, the sink and the
# Maildirs are printed; the last line is "N passed, M failed".
# Exit status: 0 only if every check passed.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SNIP=${SNIPPETS:-$REPO/exim-snippets}
MAILKEEP=${MAILKEEP:-$REPO/target/release/mailkeep}
PY=/usr/bin/python3
EXIM=/usr/sbin/exim4
TRUSTED=/etc/exim4/trusted_configs
SABOTAGE=${HARNESS_SABOTAGE:-}
T0=$(date +%s%N)

# Our domain and the admin address: as shipped in the snippet (not substituted).
OUR=$(sed -n 's/^MAILKEEP_DOMAIN *= *//p' "$SNIP/exim4.conf.example" 2>/dev/null)
ADMIN=$(sed -n 's/^MAILKEEP_ADMIN *= *//p' "$SNIP/exim4.conf.example" 2>/dev/null)
EXT=ext@example.net      # somebody on the Internet
PROVIDER_IP=127.0.0.2    # the provider: outbound relay and MX/smarthost
OUTSIDE_IP=127.0.0.3     # any other client

PASS=0; FAIL=0
WORK=; ROOT=; LOG=; SINK=; CONF=; SINK_PID=; LMTP_PID=; TRUSTED_ADDED=0; TRUSTED_CREATED=0; PIDFILE_GONE=1

ok()  { PASS=$((PASS+1)); echo "  ok   - $*"; }
bad() { FAIL=$((FAIL+1)); echo "  FAIL - $*"; }
expect() {  # expect DESC EXPECTED ACTUAL
    if [ "$2" == "$3" ]; then ok "$1 [$3]"; else bad "$1: expected [$2], got [$3]"; fi
}
check() {   # check DESC COMMAND...   (output shown only on failure)
    local d=$1 out; shift
    if out=$("$@" 2>&1); then ok "$d"; else bad "$d"; [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/         | /'; fi
}
die() { echo "ERROR: $*" >&2; FAIL=$((FAIL+1)); exit 1; }

# ------------------------------------------------------------------ teardown
mainlog() { cat "$LOG/mainlog" 2>/dev/null; }

stop_exim() {
    local pidf=$WORK/exim.pid p i st
    PIDFILE_GONE=1
    [ -f "$pidf" ] || return 0
    p=$(cat "$pidf")
    kill -TERM "$p" 2>/dev/null
    for i in $(seq 50); do   # reparented to init: it may linger as a zombie
        st=$(ps -o stat= -p "$p" 2>/dev/null)
        { [ -z "$st" ] || [ "${st:0:1}" = Z ]; } && break
        sleep 0.1
    done
    st=$(ps -o stat= -p "$p" 2>/dev/null)
    if [ -n "$st" ] && [ "${st:0:1}" != Z ]; then kill -KILL "$p" 2>/dev/null; echo "  (exim $p needed SIGKILL)"; fi
    PIDFILE_GONE=0
    for i in $(seq 20); do [ -f "$pidf" ] || { PIDFILE_GONE=1; break; }; sleep 0.1; done
    rm -f "$pidf"
}

stop_sink() {
    [ -n "$SINK_PID" ] || return 0
    kill -TERM "$SINK_PID" 2>/dev/null
    wait "$SINK_PID" 2>/dev/null
    SINK_PID=
}

stop_lmtp() {
    [ -n "$LMTP_PID" ] || return 0
    kill -TERM "$LMTP_PID" 2>/dev/null
    wait "$LMTP_PID" 2>/dev/null
    LMTP_PID=
}

untrust() {
    if [ "$TRUSTED_ADDED" = 1 ]; then
        sed -i "\\|^$CONF\$|d" "$TRUSTED"
        [ "$TRUSTED_CREATED" = 1 ] && [ ! -s "$TRUSTED" ] && rm -f "$TRUSTED"
        TRUSTED_ADDED=0
    fi
}

dump_logs() {
    echo "================ diagnostics (work dir $WORK) ================"
    local f
    for f in mainlog rejectlog paniclog; do
        echo "---- exim $f ----"; cat "$LOG/$f" 2>/dev/null
    done
    echo "---- exim queue ----"; [ -f "$CONF" ] && "$EXIM" -C "$CONF" -bp 2>&1 | head -40
    echo "---- sink transactions ----"
    for f in "$SINK"/*.json; do [ -f "$f" ] && echo "$(basename "$f"): $(cat "$f")"; done
    echo "---- sink.out ----"; cat "$WORK/sink.out" 2>/dev/null
    echo "---- maildirs ----"; (cd "$ROOT" 2>/dev/null && find . -printf '%M %u %p\n' | sort -k3)
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_exim
    stop_sink
    stop_lmtp
    untrust
    if [ -n "$ROOT" ] && mountpoint -q "$ROOT" 2>/dev/null; then umount -l "$ROOT"; fi
    if [ -n "$WORK" ] && [ -d "$ROOT" ]; then chmod -R u+rwX "$ROOT" 2>/dev/null; fi
    if [ "$FAIL" != 0 ] || [ "$rc" != 0 ]; then
        [ -n "$WORK" ] && dump_logs
        [ -n "$WORK" ] && echo "work dir kept: $WORK"
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
[ "$(id -u)" = 0 ] || die "run as root (Exim -C with deliveries needs $TRUSTED; see setup.sh)"
[ -x "$EXIM" ] || die "$EXIM missing: run tests/exim/setup.sh"
getent passwd Debian-exim >/dev/null || die "Debian-exim user missing: run tests/exim/setup.sh"
$PY -c 'import aiosmtpd' 2>/dev/null || die "python3-aiosmtpd missing: run tests/exim/setup.sh"
command -v ss >/dev/null || die "ss missing (iproute2): run tests/exim/setup.sh"
[ -f "$SNIP/exim4.conf.example" ] || die "no $SNIP/exim4.conf.example"
[[ "$OUR" =~ ^[a-z0-9.-]+$ ]] || die "MAILKEEP_DOMAIN in the example is not one plain domain: '$OUR'"
[[ "$ADMIN" == *@"$OUR" ]] || die "MAILKEEP_ADMIN in the example is not an address of $OUR: '$ADMIN'"
PIPE_USER=$(sed -n 's/^MAILKEEP_USER *= *//p' "$SNIP/exim4.conf.example")
getent passwd "$PIPE_USER" >/dev/null || die "pipe user '$PIPE_USER' missing: run tests/exim/setup.sh"
[ -x "$MAILKEEP" ] || die "mailkeep binary $MAILKEEP missing (cargo build --release, or set MAILKEEP=)"
"$MAILKEEP" help deliver >/dev/null 2>&1 || die "$MAILKEEP help deliver fails"

port_free() { [ -z "$(ss -Hltn "sport = :$1")" ]; }
pick_port() { local p=$1; while ! port_free "$p" || [ "$p" = "${2:-}" ]; do p=$((p+1)); done; echo "$p"; }
if [ -n "${SMTP_PORT:-}" ]; then port_free "$SMTP_PORT" || die "SMTP_PORT $SMTP_PORT in use"; else SMTP_PORT=$(pick_port 2525); fi
if [ -n "${SINK_PORT:-}" ]; then port_free "$SINK_PORT" || die "SINK_PORT $SINK_PORT in use"; else SINK_PORT=$(pick_port 2626 "$SMTP_PORT"); fi
[ "$SMTP_PORT" != "$SINK_PORT" ] || die "SMTP_PORT and SINK_PORT are equal"

WORK=$(mktemp -d /tmp/mailkeep-e2e.XXXXXX)
chmod 755 "$WORK"        # Debian-exim reads the config, mailbackup runs the binary
CONF=$WORK/exim.conf
ROOT=$WORK/root; LOG=$WORK/log; SINK=$WORK/sink; MSGS=$WORK/msgs; ETC=$WORK/etc
mkdir -p "$WORK"/{spool,log,sink,msgs,etc,bin,root}
chown Debian-exim:Debian-exim "$WORK/spool" "$LOG"
chown "$PIPE_USER:" "$ROOT"; chmod 750 "$ROOT"
install -m 755 "$MAILKEEP" "$WORK/bin/mailkeep"
# As the package's postinst does: the root is initialised by the user that delivers.
setpriv --reuid="$PIPE_USER" --regid="$PIPE_USER" --init-groups "$WORK/bin/mailkeep" init --root "$ROOT" >/dev/null \
    || die "mailkeep init --root $ROOT failed"
# Data files: the shipped examples (plus test entries, marked below).
cp "$SNIP/accounts.example" "$ETC/accounts"
printf "# test only: a listed name mailkeep refuses (exit 67 -> report to the admin)\no'brien\n" >> "$ETC/accounts"
{ cat "$SNIP/provider-relays"; printf '\n# test only: the fake provider\n%s\n' "$PROVIDER_IP"; } > "$ETC/provider-relays"
chmod 644 "$ETC"/*


# ------------------------------------------------------------------ config from the snippets
# subst FILE NAME VALUE: the one line "NAME = ..." (option or macro; "# NAME =" for
# a commented-out macro) becomes "NAME = VALUE". Exactly one such line must exist.
SUBST_N=0
subst() {
    local f=$1 name=$2 value=$3 n
    n=$(grep -cE "^(# *)?$name *=" "$f")
    if [ "$n" != 1 ]; then bad "snippet $(basename "$f"): expected one '$name =' line, found $n"; return 1; fi
    NAME="$name" VALUE="$value" $PY - "$f" <<'PYEOF'
import os, re, sys
p = sys.argv[1]
s = open(p).read()
pat = re.compile(r"^(# *)?" + re.escape(os.environ["NAME"]) + r" *=.*$", re.M)
s = pat.sub(lambda m: os.environ["NAME"] + " = " + os.environ["VALUE"], s, count=1)
open(p, "w").write(s)
PYEOF
    SUBST_N=$((SUBST_N+1))
}
MACRO_SUBST=(
    "MAILKEEP_ROOT=$ROOT"
    "MAILKEEP_ACCOUNTS=$ETC/accounts"
    "MAILKEEP_PROVIDER_RELAYS=$ETC/provider-relays"
    "MAILKEEP_PROVIDER_MX=$PROVIDER_IP::$SINK_PORT"
    "MAILKEEP_BIN=$WORK/bin/mailkeep"
)
STANDALONE_SUBST=(
    "MAILKEEP_SMARTHOST=$PROVIDER_IP::$SINK_PORT"
    "local_interfaces=<; 127.0.0.1"
    "daemon_smtp_ports=$SMTP_PORT"
    "spool_directory=$WORK/spool"
    "log_file_path=$LOG/%slog"
)

build_config() {  # build_config VARIANT(base|prefix|dedup|lmtp) -> $CONF
    local kv ok=1 removed
    cp "$SNIP/exim4.conf.example" "$CONF.new"
    SUBST_N=0
    local extra=()
    # The dedup variant: what an admin does to fold split transactions, --dedup added.
    [ "$1" = dedup ] && extra=("MAILKEEP_OPTIONS=$(sed -n 's/^MAILKEEP_OPTIONS *= *//p' "$SNIP/exim4.conf.example") --dedup")
    for kv in "${MACRO_SUBST[@]}" "${STANDALONE_SUBST[@]}" "${extra[@]}"; do
        subst "$CONF.new" "${kv%%=*}" "${kv#*=}" || ok=0
    done
    [ "$ok" = 1 ] || return 1
    # Nothing but the substituted lines may differ from the shipped example.
    removed=$(diff "$SNIP/exim4.conf.example" "$CONF.new" | grep -c '^>')
    if [ "$removed" != "$SUBST_N" ]; then bad "config differs from the snippet in $removed lines, expected $SUBST_N"; return 1; fi
    if [ "$1" = prefix ]; then
        # (S8 uses other Message-IDs, so it passes with --dedup in MAILKEEP_OPTIONS too.)
        # An admin who forgot the empty message_prefix/message_suffix: Exim's
        # defaults (a From_ line and one extra newline) are back.
        removed=$(grep -cE '^ *message_(prefix|suffix) *= *$' "$CONF.new")
        sed -i -E '/^ *message_(prefix|suffix) *= *$/d' "$CONF.new"
        [ "$removed" = 4 ] || { bad "prefix variant: expected to remove 4 message_prefix/suffix lines, removed $removed"; return 1; }
    fi
    if [ "$1" = lmtp ]; then
        # The commented-out lmtp transports, uncommented, their sockets in the work dir, and
        # the two backup routers pointed at them: what README's "switch" says to do.
        LMTP_SOCK=$WORK/run/lmtp.sock LMTP_SENT=$WORK/run/lmtp-sent.sock $PY - "$CONF.new" <<'PYEOF' || { bad "lmtp variant: snippet not as expected"; return 1; }
import os, re, sys
p = sys.argv[1]
s = open(p).read()
for name in ("mailkeep_inbox_lmtp", "mailkeep_sent_lmtp"):
    block = re.search(r"^#" + name + r":\n(#  .*\n)+", s, re.M)
    if not block:
        sys.exit("no commented-out " + name)
    s = s.replace(block.group(0), re.sub(r"^#", "", block.group(0), flags=re.M))
s = s.replace("/run/mailkeep/lmtp-sent.sock", os.environ["LMTP_SENT"]).replace("/run/mailkeep/lmtp.sock", os.environ["LMTP_SOCK"])
for router, transport in (("mailkeep_inbox", "mailkeep_inbox_lmtp"), ("mailkeep_sent", "mailkeep_sent_lmtp")):
    line = re.compile(r"^(  transport +=) " + router + r"$", re.M)
    if len(line.findall(s)) != 1:
        sys.exit("no one router line 'transport = %s'" % router)
    s = line.sub(lambda m: m.group(1) + " " + transport, s)
open(p, "w").write(s)
PYEOF
    fi
    case "$SABOTAGE" in
        no-unseen) sed -i -E '/^ *unseen *$/d' "$CONF.new"; echo "   !! HARNESS_SABOTAGE=no-unseen: unseen removed";;
        no-batch)  sed -i -E '/^ *batch_max *=/d' "$CONF.new"; echo "   !! HARNESS_SABOTAGE=no-batch: batch_max removed";;
        return-path-add)
            sed -i -E 's/^( *)temp_errors( *)= 75:73$/&\n\1return_path_add/' "$CONF.new"
            echo "   !! HARNESS_SABOTAGE=return-path-add: return_path_add added";;
        "") ;;
        *) die "unknown HARNESS_SABOTAGE=$SABOTAGE";;
    esac
    mv "$CONF.new" "$CONF"
    chmod 644 "$CONF"    # root-owned, not group/world writable: required for a trusted -C file
}

start_exim() {
    local out i
    if ! out=$("$EXIM" -C "$CONF" -bV 2>&1 >/dev/null) || [ -n "$out" ]; then
        bad "exim -bV of the test config: $out"; return 1
    fi
    "$EXIM" -C "$CONF" -bd -oX "$SMTP_PORT" -oP "$WORK/exim.pid" || { bad "exim -bd failed"; return 1; }
    for i in $(seq 50); do
        [ -s "$WORK/exim.pid" ] && [ -n "$(ss -Hltn "sport = :$SMTP_PORT")" ] && return 0
        sleep 0.1
    done
    bad "exim daemon did not come up"; return 1
}

# ------------------------------------------------------------------ helpers
wait_log() {   # wait_log ERE [timeout_s] -> 0 when a mainlog line matches
    local i n=$(( ${2:-10} * 10 ))
    for i in $(seq "$n"); do
        mainlog | grep -Eq -- "$1" && return 0
        sleep 0.1
    done
    return 1
}
qre() { printf '%s' "$1" | sed 's/[.[\*^$+?(){}|/]/\\&/g'; }   # ERE-quote
send() {   # send CASE BIND FROM RCPTS (message on stdin) -> prints the queue id
    local case=$1 f=$MSGS/$1.eml out rc
    cat > "$f"
    out=$($PY "$HERE/send.py" --bind "$2" --server "127.0.0.1:$SMTP_PORT" \
            --from "$3" --rcpt "$4" --data "$f"); rc=$?
    echo "$out" > "$MSGS/$case.result"
    if [ $rc = 0 ]; then echo "${out#QUEUEID }"; else echo "NOID-$case"; fi
    return $rc
}
msg() {  # msg KEY FROM TO [CC [ID]] -> the message; same KEY, same bytes (but the Message-ID)
    printf 'From: %s\nTo: %s\n' "$2" "$3"
    [ -n "${4:-}" ] && printf 'Cc: %s\n' "$4"
    printf 'Subject: mailkeep e2e %s\nDate: Thu, 01 Jan 2026 12:00:00 +0000\n' "$1"
    printf 'Message-ID: <e2e-%s@client.test>\nMIME-Version: 1.0\n' "${5:-$1}"
    printf 'Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n'
    printf 'Body of %s.\nFrom the body: an mbox-style From_ line, not escaped.\n' "$1"
    printf '.a line starting with a dot\n..two dots\nGr\303\274\303\237e, trailing spaces   \n\nlast line\n'
}
sinkq()    { $PY "$HERE/e2e_inspect.py" sink "$SINK" "$1"; }
nsink()    { sinkq "$1" | grep -c .; }
sink_rcpts() { sinkq "$1" | cut -f3 | tr ',' '\n' | grep . | sort | tr '\n' ' ' | sed 's/ $//'; }
sink_from()  { sinkq "$1" | cut -f2 | sort -u | tr '\n' ' ' | sed 's/ $//'; }
sink_file()  { sinkq "$1" | awk -F'\t' 'NR == 1 {print $1}'; }
bounces()    { $PY "$HERE/e2e_inspect.py" bounces "$SINK" "$1"; }
copies()   { $PY "$HERE/e2e_inspect.py" maildir "$ROOT" "$1"; }   # USER FOLDER PATH
copies_of() { copies "$1" | awk -F'\t' -v u="$2" -v f="$3" '$1==u && $2==f {print $3}'; }
where()    { copies "$1" | awk -F'\t' '{print $1 "/" $2}' | sort | tr '\n' ' ' | sed 's/ $//'; }
hdr()      { $PY "$HERE/e2e_inspect.py" header "$1" "$2"; }
logq()     { mainlog | grep -E "^.{19} $1 "; }

# check_copy DESC FILE SINKFILE EXPECTED-ADDED: file = added lines + sink's copy
check_copy() {
    local d=$1 f=$2 s=$3 want=$4 out
    if [ -z "$f" ] || [ -z "$s" ]; then bad "$d: copy or sink file missing"; return; fi
    out=$($PY "$HERE/e2e_inspect.py" added "$f" "$s"); local rc=$?
    if [ $rc = 0 ] && [ "$(head -1 <<<"$out")" = "$want" ]; then
        ok "$d: identical to the sink's copy apart from the added $want"
    else
        bad "$d: expected [added $want + sink copy], got:"; sed 's/^/         | /' <<<"$out"
    fi
    check "$d: Maildir file name and S= size" $PY "$HERE/e2e_inspect.py" name "$f"
    expect "$d: owner:mode" "$PIPE_USER:600" "$(stat -c '%U:%a' "$f")"
}

echo "== mailkeep Exim e2e: exim 127.0.0.1:$SMTP_PORT, sink $PROVIDER_IP:$SINK_PORT, work dir $WORK"
echo "   mailkeep: $MAILKEEP ($("$MAILKEEP" --version 2>/dev/null))"

# ------------------------------------------------------------------ S0: configs
echo "== S0: configs assemble from the snippets"
out=$("$EXIM" -C "$SNIP/exim4.conf.example" -bV 2>&1 >/dev/null)
expect "shipped exim4.conf.example parses (exim -bV, DNS branch)" "" "$out"
build_config base || exit 1
ok "test config = exim4.conf.example with $SUBST_N substituted lines (paths, ports, provider hosts)"
out=$("$EXIM" -C "$CONF" -bV 2>&1 >/dev/null)
expect "test config parses (exim -bV)" "" "$out"

# Debian split configuration: stock conf.d + our files, same substitutions.
DEB=$WORK/debian
mkdir -p "$DEB"
cp -a /etc/exim4/conf.d "$DEB/"
cp -a "$SNIP/debian/conf.d/." "$DEB/conf.d/"
ok_deb=1
for kv in "${MACRO_SUBST[@]}"; do subst "$DEB/conf.d/main/00_mailkeep_macros" "${kv%%=*}" "${kv#*=}" || ok_deb=0; done
cat > "$DEB/update-exim4.conf.conf" <<'EOF'
dc_eximconfig_configtype='internet'
dc_other_hostnames=''
dc_local_interfaces='127.0.0.1'
dc_readhost=''
dc_relay_domains=''
dc_minimaldns='false'
dc_relay_nets=''
dc_smarthost=''
CFILEMODE='644'
dc_use_split_config='true'
dc_hide_mailname=''
dc_mailname_in_oh='true'
dc_localdelivery='mail_spool'
EOF
DEBCONF=$DEB/exim4.conf.generated
if [ "$ok_deb" = 1 ] && out=$(update-exim4.conf -d "$DEB" -o "$DEBCONF" 2>&1); then
    ok "Debian split files assemble (update-exim4.conf -d ... -o ...)"
    out=$("$EXIM" -C "$DEBCONF" -bV 2>&1 >/dev/null)
    expect "assembled Debian config parses (exim -bV)" "" "$out"
    expect "Debian: mailkeep routers come first" "mailkeep_sent mailkeep_inbox mailkeep_to_provider" \
        "$("$EXIM" -C "$DEBCONF" -bP router_list 2>/dev/null | head -3 | tr '\n' ' ' | sed 's/ $//')"
    for r in mailkeep_sent mailkeep_inbox mailkeep_to_provider; do
        check "Debian = stand-alone: router $r (exim -bP)" \
            diff <("$EXIM" -C "$CONF" -bP router "$r" 2>&1) <("$EXIM" -C "$DEBCONF" -bP router "$r" 2>&1)
    done
    for t in mailkeep_inbox mailkeep_sent mailkeep_provider_smtp; do
        check "Debian = stand-alone: transport $t (exim -bP)" \
            diff <("$EXIM" -C "$CONF" -bP transport "$t" 2>&1) <("$EXIM" -C "$DEBCONF" -bP transport "$t" 2>&1)
    done
    for l in +mailkeep_domains +mailkeep_provider_relays +relay_to_domains +relay_from_hosts; do
        check "Debian = stand-alone: list $l (exim -bP)" \
            diff <("$EXIM" -C "$CONF" -bP "$l" 2>&1) <("$EXIM" -C "$DEBCONF" -bP "$l" 2>&1)
    done
    check "Debian = stand-alone: retry rule for alice@$OUR (exim -brt)" \
        diff <("$EXIM" -C "$CONF" -brt "alice@$OUR" 2>&1) <("$EXIM" -C "$DEBCONF" -brt "alice@$OUR" 2>&1)
else
    bad "Debian split files do not assemble: $out"
fi

# The helper scripts (no Exim needed).
ACCT=$WORK/acct-test; mkdir -p "$ACCT"
printf 'primaryEmail\nAlice@Example.COM\nbob@example.com\nx@example.org\nbad name@example.com\n' > "$ACCT/src"
ACCOUNTS=$ACCT/accounts DOMAIN=$OUR "$SNIP/update-accounts.example.sh" cat "$ACCT/src" >/dev/null 2>&1
expect "update-accounts.example.sh: local parts of $OUR, lower-cased, checked" "alice bob" \
    "$(grep -v '^#' "$ACCT/accounts" 2>/dev/null | tr '\n' ' ' | sed 's/ $//')"
ACCOUNTS=$ACCT/accounts DOMAIN=$OUR "$SNIP/update-accounts.example.sh" false >/dev/null 2>&1
expect "update-accounts.example.sh: failing source -> exit 1, file kept, no temp files left" "1 alice bob accounts src" \
    "$? $(grep -v '^#' "$ACCT/accounts" | tr '\n' ' ')$(ls "$ACCT" | tr '\n' ' ' | sed 's/ $//')"
cat > "$ACCT/dig" <<'EOF'
#!/bin/sh
for last; do :; done
case "$last" in
_spf.google.com) echo '"v=spf1 include:_netblocks.google.com include:_netblocks2.google.com ~all"';;
_netblocks.google.com) echo '"v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 ip4:203.0.113.0/" "24 ~all"';;
_netblocks2.google.com) echo '"v=spf1 ip6:2001:db8::/32 ~all"';;
*) exit 1;;
esac
EOF
chmod 755 "$ACCT/dig"
RELAYS=$ACCT/relays DIG=$ACCT/dig MIN_RANGES=2 "$SNIP/update-provider-relays.example.sh" >/dev/null 2>&1
expect "update-provider-relays.example.sh: follows includes, joins TXT strings" \
    "192.0.2.0/24 198.51.100.0/24 203.0.113.0/24 2001:db8::/32" \
    "$(grep -v '^#' "$ACCT/relays" 2>/dev/null | grep . | tr '\n' ' ' | sed 's/ $//')"

# ------------------------------------------------------------------ start
"$PY" "$HERE/sink.py" "$PROVIDER_IP" "$SINK_PORT" "$SINK" "$WORK/sink.pid" > "$WORK/sink.out" 2>&1 &
SINK_PID=$!
[ -e "$TRUSTED" ] || TRUSTED_CREATED=1
echo "$CONF" >> "$TRUSTED"; chmod 644 "$TRUSTED"; TRUSTED_ADDED=1
start_exim || exit 1
for i in $(seq 50); do [ -s "$WORK/sink.pid" ] && break; sleep 0.1; done
expect "sink listening" "$PROVIDER_IP:$SINK_PORT" "$(ss -Hltn "sport = :$SINK_PORT" | awk '{print $4}' | head -1)"
expect "exim listens only on 127.0.0.1:$SMTP_PORT" "127.0.0.1:$SMTP_PORT" \
       "$(ss -Hltn "sport = :$SMTP_PORT" | awk '{print $4}' | tr '\n' ' ' | sed 's/ $//')"

# ------------------------------------------------------------------ S1: inbound To/Cc/Bcc
echo "== S1: inbound $EXT -> alice (To), bob (Cc), carol (Bcc)"
S1=$(msg in "$EXT" "alice@$OUR" "bob@$OUR" | send S1 "$OUTSIDE_IP" "$EXT" "alice@$OUR,bob@$OUR,carol@$OUR")
check "S1 accepted ($S1)" test "${S1#NOID}" = "$S1"
check "S1 completed" wait_log "^.{19} $S1 Completed"
expect "S1: sink got the message once" 1 "$(nsink "$S1")"
expect "S1: sink envelope" "$EXT | alice@$OUR bob@$OUR carol@$OUR" "$(sink_from "$S1") | $(sink_rcpts "$S1")"
expect "S1: stored copies" "alice/INBOX bob/INBOX carol/INBOX" "$(where "$S1")"
s=$(sink_file "$S1")
for u in alice bob carol; do
    f=$(copies_of "$S1" $u INBOX)
    check_copy "S1 $u" "$f" "$s" "Return-Path,Delivered-To"
    expect "S1 $u: Return-Path" "<$EXT>" "$(hdr "$f" Return-Path)"
    expect "S1 $u: Delivered-To" "$u@$OUR" "$(hdr "$f" Delivered-To)"
    check "S1 $u: Exim log: delivered by mailkeep_inbox, errors to the admin" \
        wait_log "^.{19} $S1 => .*<$u@$(qre $OUR)> P=<$(qre $ADMIN)> R=mailkeep_inbox T=mailkeep_inbox"
done
check "S1: Bcc recipient not in the headers" bash -c "! grep -qi '^bcc:' '$(copies_of "$S1" carol INBOX)'"
expect "S1: Exim log: relayed in one delivery by mailkeep_to_provider" 1 \
    "$(logq "$S1" | grep -c ' => .*R=mailkeep_to_provider T=mailkeep_provider_smtp')"

# ------------------------------------------------------------------ S2: unlisted
echo "== S2: inbound to an unlisted local part (zed@$OUR)"
before=$($PY "$HERE/e2e_inspect.py" count "$ROOT")
S2=$(msg unlisted "$EXT" "zed@$OUR" | send S2 "$OUTSIDE_IP" "$EXT" "zed@$OUR")
check "S2 completed" wait_log "^.{19} $S2 Completed"
expect "S2: relayed to the provider" "$EXT | zed@$OUR" "$(sink_from "$S2") | $(sink_rcpts "$S2")"
expect "S2: no copy anywhere" "0 $before" "$(copies "$S2" | grep -c .) $($PY "$HERE/e2e_inspect.py" count "$ROOT")"
expect "S2: Exim log: no backup delivery" 0 "$(logq "$S2" | grep -cE 'R=mailkeep_(inbox|sent)')"

# ------------------------------------------------------------------ S3: outbound via the provider
echo "== S3: outbound alice@$OUR from the provider's relay ($PROVIDER_IP) -> $EXT (To), bob (Cc), carol (Bcc)"
S3=$(msg out "alice@$OUR" "$EXT" "bob@$OUR" | send S3 "$PROVIDER_IP" "alice@$OUR" "$EXT,bob@$OUR,carol@$OUR")
check "S3 accepted from $PROVIDER_IP ($S3)" test "${S3#NOID}" = "$S3"
check "S3 completed" wait_log "^.{19} $S3 Completed"
expect "S3: relayed on, each recipient once" "alice@$OUR | bob@$OUR carol@$OUR $EXT" "$(sink_from "$S3") | $(sink_rcpts "$S3")"
expect "S3: stored copies (one Sent; inbound copies for bob, carol)" "alice/.Sent bob/INBOX carol/INBOX" "$(where "$S3")"
s=$(sink_file "$S3")
f=$(copies_of "$S3" alice .Sent | head -1)
check_copy "S3 alice .Sent" "$f" "$s" "Return-Path,Delivered-To,Envelope-To"
expect "S3 .Sent: Return-Path" "<alice@$OUR>" "$(hdr "$f" Return-Path)"
expect "S3 .Sent: Envelope-To has all three" "bob@$OUR carol@$OUR $EXT" \
    "$(hdr "$f" Envelope-To | tr ', ' '\n\n' | grep @ | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')"
expect "S3: Exim log: one mailkeep_sent delivery (batch)" 1 "$(logq "$S3" | grep -c '=> .*R=mailkeep_sent T=mailkeep_sent')"
for u in bob carol; do
    f=$(copies_of "$S3" $u INBOX)
    check_copy "S3 $u" "$f" "$s" "Return-Path,Delivered-To"
    expect "S3 $u: Return-Path" "<alice@$OUR>" "$(hdr "$f" Return-Path)"
done

# ------------------------------------------------------------------ S3h: a recipient like an option
# A local part may start with "-". Passed as an argument, "-hr@..." once read as mailkeep's -h
# (help: exit 0, nothing stored); the transports pass $pipe_addresses after "--".
HY="-hr@example.net"
echo "== S3h: outbound alice@$OUR -> $EXT, $HY (a local part starting with '-')"
S3h=$(msg out-hyphen "alice@$OUR" "$EXT" | send S3h "$PROVIDER_IP" "alice@$OUR" "$EXT,$HY")
check "S3h accepted ($S3h)" test "${S3h#NOID}" = "$S3h"
check "S3h completed" wait_log "^.{19} $S3h Completed"
expect "S3h: stored copies (one Sent)" "alice/.Sent" "$(where "$S3h")"
f=$(copies_of "$S3h" alice .Sent | head -1)
check_copy "S3h alice .Sent" "$f" "$(sink_file "$S3h")" "Return-Path,Delivered-To,Envelope-To"
expect "S3h .Sent: Envelope-To has both" "$HY $EXT" \
    "$(hdr "$f" Envelope-To | tr ', ' '\n\n' | grep @ | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')"

# ------------------------------------------------------------------ S4: not the provider
echo "== S4: alice@$OUR from $OUTSIDE_IP (not a provider relay)"
msg notprovider "alice@$OUR" "ext2@example.org" | send S4a "$OUTSIDE_IP" "alice@$OUR" "ext2@example.org" >/dev/null
expect "S4a: relaying to ext2@example.org refused (send.py exit 2)" 2 "$?"
check "S4a: rejectlog: relay not permitted" grep -q 'rejected RCPT <ext2@example.org>: relay not permitted' "$LOG/rejectlog"
expect "S4a: nothing reached the sink" "" "$(grep -l 'e2e-notprovider@' "$SINK"/*.eml 2>/dev/null)"
S4=$(msg notprovider2 "alice@$OUR" "bob@$OUR" | send S4b "$OUTSIDE_IP" "alice@$OUR" "bob@$OUR")
check "S4b: to our own domain: accepted, completed" wait_log "^.{19} $S4 Completed"
expect "S4b: no Sent copy, only bob's inbound copy" "bob/INBOX" "$(where "$S4")"
echo "== S4c: from the provider's relay, but the sender is not a listed account"
S4c=$(msg unlistedsender "zed@$OUR" "$EXT" | send S4c "$PROVIDER_IP" "zed@$OUR" "$EXT")
check "S4c completed" wait_log "^.{19} $S4c Completed"
expect "S4c: relayed, no copy" "1 0" "$(nsink "$S4c") $(copies "$S4c" | grep -c .)"
S4d=$(msg otherdomain "alice@example.org" "$EXT" | send S4d "$PROVIDER_IP" "alice@example.org" "$EXT")
check "S4d (listed local part, other domain) completed" wait_log "^.{19} $S4d Completed"
expect "S4d: relayed, no copy" "1 0" "$(nsink "$S4d") $(copies "$S4d" | grep -c .)"

# ------------------------------------------------------------------ S5: null sender
echo "== S5: a bounce (null sender <>) for alice"
S5=$(msg bounce "MAILER-DAEMON@example.net" "alice@$OUR" | send S5 "$OUTSIDE_IP" "" "alice@$OUR")
check "S5 completed" wait_log "^.{19} $S5 Completed"
f=$(copies_of "$S5" alice INBOX)
expect "S5: one copy for alice" "alice/INBOX" "$(where "$S5")"
expect "S5: Return-Path" "<>" "$(hdr "$f" Return-Path)"
check_copy "S5 alice" "$f" "$(sink_file "$S5")" "Return-Path,Delivered-To"
expect "S5: relayed with the null sender" "<> | alice@$OUR" "$(sink_from "$S5") | $(sink_rcpts "$S5")"

# ------------------------------------------------------------------ S6: backup root unwritable
echo "== S6: backup root unwritable -> defer (75), relay once, then exim -qf stores once"
find "$ROOT" -type d -printf '%m %p\n' > "$WORK/modes"
find "$ROOT" -type d -exec chmod a-w {} +
expect "S6: dave has no Maildir yet" "" "$(ls -d "$ROOT/dave" 2>/dev/null)"
S6=$(msg unwritable "$EXT" "bob@$OUR" "dave@$OUR" | send S6 "$OUTSIDE_IP" "$EXT" "bob@$OUR,dave@$OUR")
check "S6 accepted ($S6)" test "${S6#NOID}" = "$S6"
for u in bob dave; do
    check "S6: $u deferred: mailkeep exit 75" \
        wait_log "^.{19} $S6 == $u@$(qre $OUR) .*R=mailkeep_inbox T=mailkeep_inbox defer .*returned 75"
done
check "S6: relayed to the provider in the same run" wait_log "^.{19} $S6 => .*R=mailkeep_to_provider"
sleep 0.5
logq "$S6" | grep ' == ' | sed 's/^/   log: /' | cut -c1-220
expect "S6: sink got it once" 1 "$(nsink "$S6")"
expect "S6: still queued (exim -bpc)" 1 "$("$EXIM" -C "$CONF" -bpc)"
expect "S6: nothing stored" "" "$(where "$S6")"
expect "S6: no failure, no bounce (** / <= <> R=)" 0 "$(mainlog | grep -cE "^.{19} ($S6 \*\*|\S+ <= <> R=$S6 )")"
expect "S6: no bounce at the sink" "" "$(bounces "$S6")"
while read -r m p; do chmod "$m" "$p"; done < "$WORK/modes"
"$EXIM" -C "$CONF" -qf
check "S6: exim -qf delivered the copies" wait_log "^.{19} $S6 Completed"
expect "S6: stored once each" "bob/INBOX dave/INBOX" "$(where "$S6")"
s=$(sink_file "$S6")
for u in bob dave; do check_copy "S6 $u" "$(copies_of "$S6" $u INBOX)" "$s" "Return-Path,Delivered-To"; done
expect "S6: relay not repeated" 1 "$(nsink "$S6")"
expect "S6: queue empty" 0 "$("$EXIM" -C "$CONF" -bpc)"
expect "S6: still no bounce (log, sink)" "0 0" "$(mainlog | grep -cE "^.{19} \S+ <= <> R=$S6 ") $(bounces "$S6" | grep -c .)"

# ------------------------------------------------------------------ S6m: backup volume not mounted
echo "== S6m: backup volume not mounted (an empty directory over the root) -> defer (75), nothing stored there, exim -qf stores once"
# An empty tmpfs over the root is what Exim sees when the backup volume is not mounted:
# the mount point, empty, owned by the pipe user.
mount -t tmpfs -o "size=1m,mode=0750,uid=$(id -u "$PIPE_USER"),gid=$(id -g "$PIPE_USER")" tmpfs "$ROOT"
S6M=$(msg unmounted "$EXT" "bob@$OUR" | send S6m "$OUTSIDE_IP" "$EXT" "bob@$OUR")
check "S6m accepted ($S6M)" test "${S6M#NOID}" = "$S6M"
check "S6m: bob deferred: mailkeep exit 75" \
    wait_log "^.{19} $S6M == bob@$(qre $OUR) .*R=mailkeep_inbox T=mailkeep_inbox defer .*returned 75"
check "S6m: the reason is in the log" wait_log "^.{19} $S6M <bob@$(qre $OUR)>: mailkeep_inbox transport output: .*not initialised or not mounted"
check "S6m: relayed to the provider in the same run" wait_log "^.{19} $S6M => .*R=mailkeep_to_provider"
expect "S6m: nothing written on the mount point" "" "$(ls -A "$ROOT")"
expect "S6m: still queued (exim -bpc)" 1 "$("$EXIM" -C "$CONF" -bpc)"
expect "S6m: no bounce (log, sink)" "0 0" "$(mainlog | grep -cE "^.{19} \S+ <= <> R=$S6M ") $(bounces "$S6M" | grep -c .)"
umount "$ROOT"
"$EXIM" -C "$CONF" -qf
check "S6m: exim -qf delivered the copy after mounting" wait_log "^.{19} $S6M Completed"
expect "S6m: stored once" "bob/INBOX" "$(where "$S6M")"
expect "S6m: relay not repeated" 1 "$(nsink "$S6M")"
expect "S6m: queue empty" 0 "$("$EXIM" -C "$CONF" -bpc)"

# ------------------------------------------------------------------ S7: permanent failure
echo "== S7: a listed name mailkeep refuses (o'brien): permanent failure, report to the admin only"
S7=$(msg refused "$EXT" "o'brien@$OUR" | send S7 "$OUTSIDE_IP" "$EXT" "o'brien@$OUR")
check "S7: failed (**) in mailkeep_inbox" wait_log "^.{19} $S7 \*\* o'brien@$(qre $OUR) .*R=mailkeep_inbox T=mailkeep_inbox"
check "S7: relayed anyway" wait_log "^.{19} $S7 => .*R=mailkeep_to_provider"
check "S7: report generated" wait_log "^.{19} \S+ <= <> R=$S7 "
B7=$(mainlog | sed -nE "s/^.{19} (\S+) <= <> R=$S7 .*/\1/p" | head -1)
check "S7: report delivered" wait_log "^.{19} $B7 Completed"
expect "S7: the report went to the admin, not to the sender" "$ADMIN" \
    "$(for b in $(bounces "$S7"); do $PY -c 'import json,sys; print(",".join(json.load(open(sys.argv[1]))["rcpt_tos"]))' "${b%.eml}.json"; done | sort -u | tr '\n' ' ' | sed 's/ $//')"
logq "$S7" | grep ' \*\* ' | sed 's/^/   log: /' | cut -c1-220

# ------------------------------------------------------------------ S8: default message_prefix
echo "== S8: Exim's default message_prefix/message_suffix left in (variant config)"
stop_exim
build_config prefix || exit 1
start_exim || exit 1
check "S8: variant config has the default message_prefix" \
    bash -c "'$EXIM' -C '$CONF' -bP transport mailkeep_inbox | grep -q '^message_prefix = From '"
S8=$(msg in "$EXT" "alice@$OUR" "bob@$OUR" in-prefix | send S8 "$OUTSIDE_IP" "$EXT" "alice@$OUR")
check "S8 completed" wait_log "^.{19} $S8 Completed"
f=$(copies_of "$S8" alice INBOX)
check_copy "S8 alice" "$f" "$(sink_file "$S8")" "Return-Path,Delivered-To"
expect "S8 alice: Return-Path is the sender (not the From_ line's errors address)" "<$EXT>" "$(hdr "$f" Return-Path)"
check "S8 alice: identical to S1's copy but Received/Message-ID (no From_ line, no extra newline)" \
    $PY "$HERE/e2e_inspect.py" same-but-trace "$(copies_of "$S1" alice INBOX)" "$f"
S8o=$(msg out "alice@$OUR" "$EXT" "bob@$OUR" out-prefix | send S8o "$PROVIDER_IP" "alice@$OUR" "$EXT,bob@$OUR,carol@$OUR")
check "S8o completed" wait_log "^.{19} $S8o Completed"
expect "S8o: stored copies" "alice/.Sent bob/INBOX carol/INBOX" "$(where "$S8o")"
check "S8o alice .Sent: identical to S3's but Received/Message-ID" \
    $PY "$HERE/e2e_inspect.py" same-but-trace "$(copies_of "$S3" alice .Sent)" "$(copies_of "$S8o" alice .Sent)"
check "S8o bob: identical to S3's but Received/Message-ID" \
    $PY "$HERE/e2e_inspect.py" same-but-trace "$(copies_of "$S3" bob INBOX)" "$(copies_of "$S8o" bob INBOX)"

# ------------------------------------------------------------------ S9: one message, two transactions
# The provider may hand one message to the relay as several SMTP transactions (Bcc
# recipients apart): the same Message-ID reaches alice's Sent twice. Without --dedup both
# copies are stored; with --dedup (issue 4) exactly one.
sent_with_id() {  # sent_with_id ID -> number of files in alice/.Sent carrying that Message-ID
    grep -lF "Message-ID: <e2e-$1@client.test>" "$ROOT"/alice/.Sent/new/* "$ROOT"/alice/.Sent/cur/* 2>/dev/null | wc -l
}
two_transactions() {  # two_transactions CASE ID -> sends the same message twice from the provider
    local a b
    a=$(msg out "alice@$OUR" "$EXT" "" "$2" | send "$1a" "$PROVIDER_IP" "alice@$OUR" "$EXT")
    b=$(msg out "alice@$OUR" "$EXT" "" "$2" | send "$1b" "$PROVIDER_IP" "alice@$OUR" "x2@example.net")
    check "$1: first transaction completed" wait_log "^.{19} $a Completed"
    check "$1: second transaction completed" wait_log "^.{19} $b Completed"
}
echo "== S9: one message as two SMTP transactions from the provider, --dedup off, then on"
stop_exim
build_config base || exit 1
start_exim || exit 1
two_transactions S9off split-off
expect "S9 without --dedup: two Sent copies (one per transaction)" 2 "$(sent_with_id split-off)"
stop_exim
build_config dedup || exit 1
start_exim || exit 1
check "S9: variant config passes --dedup" bash -c "'$EXIM' -C '$CONF' -bP transport mailkeep_sent | grep -q -- '--dedup'"
two_transactions S9on split-on
expect "S9 with --dedup: exactly one Sent copy" 1 "$(sent_with_id split-on)"
check "S9: the dedup store exists in the root" test -s "$ROOT/.mailkeep/dedup.sqlite3"

# ------------------------------------------------------------------ S10: over LMTP
echo "== S10: S1 and S3 again through the snippets' lmtp transports into mailkeep lmtp"
stop_exim
mkdir -p "$WORK/run"; chown "$PIPE_USER:" "$WORK/run"
setpriv --reuid="$PIPE_USER" --regid="$PIPE_USER" --init-groups "$WORK/bin/mailkeep" lmtp --root "$ROOT" \
    --accounts "$ETC/accounts" --listen "$WORK/run/lmtp.sock" --listen-sent "$WORK/run/lmtp-sent.sock" \
    --log stderr 2> "$WORK/lmtp.err" &
LMTP_PID=$!
for i in $(seq 50); do [ -S "$WORK/run/lmtp-sent.sock" ] && break; sleep 0.1; done
check "S10: mailkeep lmtp listens" test -S "$WORK/run/lmtp-sent.sock"
build_config lmtp || exit 1
start_exim || exit 1
check "S10: the routers use the lmtp transports" \
    bash -c "'$EXIM' -C '$CONF' -bP router mailkeep_inbox | grep -qx 'transport = mailkeep_inbox_lmtp'"
S10=$(msg in "$EXT" "alice@$OUR" "bob@$OUR" in-lmtp | send S10 "$OUTSIDE_IP" "$EXT" "alice@$OUR,bob@$OUR,carol@$OUR")
check "S10 completed" wait_log "^.{19} $S10 Completed"
expect "S10: stored copies" "alice/INBOX bob/INBOX carol/INBOX" "$(where "$S10")"
for u in alice bob carol; do
    check_copy "S10 $u" "$(copies_of "$S10" $u INBOX)" "$(sink_file "$S10")" "Return-Path,Delivered-To"
    check "S10 $u: identical to S1's pipe copy but Received/Message-ID" \
        $PY "$HERE/e2e_inspect.py" same-but-trace "$(copies_of "$S1" $u INBOX)" "$(copies_of "$S10" $u INBOX)"
done
check "S10: Exim log: delivered by mailkeep_inbox_lmtp" wait_log "^.{19} $S10 => .*R=mailkeep_inbox T=mailkeep_inbox_lmtp"
S10o=$(msg out "alice@$OUR" "$EXT" "bob@$OUR" out-lmtp | send S10o "$PROVIDER_IP" "alice@$OUR" "$EXT,bob@$OUR,carol@$OUR")
check "S10o completed" wait_log "^.{19} $S10o Completed"
expect "S10o: stored copies (one Sent for the three recipients)" "alice/.Sent bob/INBOX carol/INBOX" "$(where "$S10o")"
check "S10o alice .Sent: identical to S3's pipe copy but Received/Message-ID" \
    $PY "$HERE/e2e_inspect.py" same-but-trace "$(copies_of "$S3" alice .Sent)" "$(copies_of "$S10o" alice .Sent)"
S10r=$(msg refused "$EXT" "o'brien@$OUR" lmtp-refused | send S10r "$OUTSIDE_IP" "$EXT" "o'brien@$OUR")
check "S10r: a listed name mailkeep refuses: 550, failed (**), reported to the admin" \
    wait_log "^.{19} $S10r \*\* o'brien@$(qre $OUR) .*T=mailkeep_inbox_lmtp.*550"
B10=$(mainlog | sed -nE "s/^.{19} (\S+) <= <> R=$S10r .*/\1/p" | head -1)
check "S10r: report delivered" wait_log "^.{19} ${B10:-none} Completed"
expect "S10r: the report went to the admin, not to the sender" "$ADMIN" \
    "$(for b in $(bounces "$S10r"); do $PY -c 'import json,sys; print(",".join(json.load(open(sys.argv[1]))["rcpt_tos"]))' "${b%.eml}.json"; done | sort -u | tr '\n' ' ' | sed 's/ $//')"
stop_lmtp
ROOT_FILES=$(find "$ROOT" -path "$ROOT/*/tmp/*" -type f | wc -l)
expect "S10: nothing left in any tmp/" 0 "$ROOT_FILES"

# ------------------------------------------------------------------ end
echo "== end"
if [ -n "${EXPORT_ROOT:-}" ]; then
    rm -rf "$EXPORT_ROOT" && cp -a "$ROOT" "$EXPORT_ROOT"
    check "backup root exported to $EXPORT_ROOT" test -d "$EXPORT_ROOT"
fi
expect "paniclog empty" "" "$(cat "$LOG/paniclog" 2>/dev/null)"
expect "queue empty" 0 "$("$EXIM" -C "$CONF" -bpc)"
expect "no frozen messages, no failures other than S7's" "" \
    "$(mainlog | grep -E ' \*\* | frozen' | grep -v " $S7 " | grep -v " $B7 " | grep -v " $S10r " | grep -v " ${B10:-none} ")"
stop_exim
expect "exim removed its pid file on SIGTERM" 1 "$PIDFILE_GONE"
stop_sink
untrust
expect "sink stopped, pid file removed" "" "$(ls "$WORK/sink.pid" 2>/dev/null)"
sleep 0.2
expect "no process left running from the work dir" "" \
    "$(ps -eo pid=,stat=,args= | awk '$2 !~ /^Z/' | grep -F "$WORK" | grep -v grep)"
expect "ports free again" "" "$(ss -Hltn "( sport = :$SMTP_PORT or sport = :$SINK_PORT )")"
n=$(grep -cxF "$CONF" "$TRUSTED" 2>/dev/null); expect "$TRUSTED no longer lists the test config" 0 "${n:-0}"
