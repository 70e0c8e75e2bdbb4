#!/bin/bash
# What a backup copy costs the relay (issue 24, section 1): the real Exim on loopback with the
# shipped exim-snippets/exim4.conf.example, a sink as the provider, N inbound messages from
# several concurrent SMTP clients; set-ups (a) relay only, (b) mailkeep deliver, (c) deliver
# --dedup, (d) Exim appendfile maildir, (e) Exim lmtp into Dovecot, (f) Exim lmtp into
# mailkeep lmtp, (g) mailkeep lmtp --dedup, interleaved in each round. bench/relay.py does
# the work; this script checks and prepares the machine.
#
#   bench/relay.sh                 2000 messages, 8 clients, 3 rounds; table into $WORK/relay.md
#   bench/relay.sh --quick         200 messages, 1 round (what .ci/run shows, never failing it)
#   bench/relay.sh --messages N --clients C --rounds R --variants abcdefg --out FILE
#   bench/relay.sh --cgroup v2     CPU from the cgroup v2 hierarchy even where v1 cpuacct exists
#
# As root (Exim's -C config must be listed in /etc/exim4/trusted_configs for deliveries to run
# as mailbackup; the line is added for the run and removed after), after tests/exim/setup.sh
# (Exim, aiosmtpd, the mailbackup user) and with dovecot-lmtpd installed (the script installs
# it when missing, no daemon started). --bin PATH: the mailkeep binary (default: target/release).
# Exit status: 0 every message relayed and every copy stored in every round, 1 otherwise,
# 2 set-up failure (one line: e.g. mailbackup cannot join the copier's cgroup). SIGTERM or
# SIGINT stops the run cleanly: relay.py gets SIGTERM and stops its clients, Exim, the
# copier and the sink by pid and removes its cgroups; this script removes its
# trusted_configs lines; exit 143.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=/var/tmp/mailkeep-relay-bench
BIN=$REPO/target/release/mailkeep
OUT=
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) ARGS+=(--messages 200 --rounds 1) ;;
        --messages|--clients|--rounds|--variants|--seed|--cgroup) ARGS+=("$1" "$2"); shift ;;
        --work) WORK=$2; shift ;;
        --bin) BIN=$2; shift ;;
        --out) OUT=$2; shift ;;
        *) echo "usage: bench/relay.sh [--quick] [--messages N] [--clients C] [--rounds R] [--variants abcdefg] [--cgroup auto|v1|v2] [--work DIR] [--bin PATH] [--out FILE]" >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-$WORK/relay.md}
die() { echo "bench/relay.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root"
[ -x /usr/sbin/exim4 ] && getent passwd mailbackup >/dev/null && /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null ||
    die "Exim, aiosmtpd or the mailbackup user missing: run tests/exim/setup.sh"
if [ ! -x /usr/lib/dovecot/lmtp ]; then
    POLICY=/usr/sbin/policy-rc.d; added=0
    [ -e $POLICY ] || { printf '#!/bin/sh\nexit 101\n' > $POLICY; chmod 755 $POLICY; added=1; }
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends dovecot-lmtpd >/dev/null ||
        { [ $added = 1 ] && rm -f $POLICY; die "cannot install dovecot-lmtpd"; }
    [ $added = 1 ] && rm -f $POLICY
fi
[ -x "$BIN" ] || die "no mailkeep binary at $BIN (cargo build --release, or --bin PATH)"
command -v gcc >/dev/null || die "gcc missing"

rm -rf "$WORK"; mkdir -p "$WORK/bin"; chmod 755 "$WORK" "$WORK/bin"
install -m 755 "$BIN" "$WORK/bin/mailkeep"
gcc -O2 -Wall -static -o "$WORK/bin/cgjoin" bench/cgjoin.c
TRUSTED=/etc/exim4/trusted_configs
touch "$TRUSTED"
cleanup() { sed -i "\\|^$WORK/exim-.\\.conf\$|d" "$TRUSTED"; }
trap cleanup EXIT
for v in a b c d e f g; do echo "$WORK/exim-$v.conf" >> "$TRUSTED"; done
echo "bench/relay.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) (figures are noisy above ~0.5)" >&2
status=0
# In the background, so that a signal to this script reaches it (bash waits for a
# foreground child before running a trap) and its `finally` blocks clean up.
/usr/bin/python3 bench/relay.py --work "$WORK" --snippets "$REPO/exim-snippets" --mailkeep "$WORK/bin/mailkeep" \
    --cgjoin "$WORK/bin/cgjoin" --json "$WORK/relay.json" --md "$OUT" "${ARGS[@]}" &
RELAY=$!
stopped() {
    trap '' TERM INT
    kill -TERM "$RELAY" 2>/dev/null || true
    wait "$RELAY" || true
    echo "bench/relay.sh: stopped by a signal; Exim, the copiers and the cgroups are stopped and removed" >&2
    exit 143
}
trap stopped TERM INT
wait "$RELAY" || status=$?
echo "bench/relay.sh: table in $OUT, raw figures in $WORK/relay.json" >&2
exit $status
