#!/bin/bash
# Two relays, one backup (issue 24): two real Exim daemons with their own host names
# (relay-a, relay-b, each in a UTS namespace of its own) store into their own roots; a
# serving host merges copies of both roots into one with Dovecot's dsync (`doveadm sync -1
# -R`) and serves it with the config `mailkeep serve-config dovecot` writes; imaplib checks
# that every copy of both relays is there, byte for byte (a message that passed both relays
# twice), that merging again adds nothing and that a later copy is merged alone; `mailkeep
# check` of each root and of the merged one. All on loopback; stopped by pid. About 10 s.
# A SIGTERM, SIGINT or SIGHUP ends it cleanly: its Exim daemons, sink and Dovecot are
# stopped and its configs taken out of /etc/exim4/trusted_configs, which is checked last.
#
# Usage (as root, after tests/exim/setup.sh, tests/imap/setup.sh and cargo build --release):
#   tests/multirelay/run-e2e.sh
# Env:
#   MAILKEEP    mailkeep binary (default: <repo>/target/release/mailkeep); copied into the
#               work dir, mode 755, so mailbackup can run it
#   KEEP_WORK=1 keep the work dir (/tmp/mailkeep-multirelay.XXXXXX) even on success
#   HARNESS_SABOTAGE=backup  self-test: merge with `doveadm backup -R` (the run must FAIL)
# Output: one line per check, logs on failure; the last line is "N passed, M failed".
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MAILKEEP=${MAILKEEP:-$REPO/target/release/mailkeep}
fail() { echo "ERROR: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (Exim daemons, UTS namespaces, setpriv)"
[ -x "$MAILKEEP" ] || fail "mailkeep binary $MAILKEEP missing (cargo build --release, or set MAILKEEP=)"
[ -x /usr/sbin/exim4 ] || fail "Exim missing: run tests/exim/setup.sh"
[ -x /usr/sbin/dovecot ] && command -v doveadm >/dev/null || fail "Dovecot missing: run tests/imap/setup.sh"
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || fail "python3-aiosmtpd missing: run tests/exim/setup.sh"
getent passwd mailbackup >/dev/null || fail "user mailbackup missing: run tests/exim/setup.sh"
command -v unshare >/dev/null || fail "unshare (util-linux) missing"

WORK=$(mktemp -d /tmp/mailkeep-multirelay.XXXXXX) || fail "mktemp"
chmod 755 "$WORK"        # Debian-exim reads the configs, mailbackup runs the binary
mkdir "$WORK/bin" && install -m 755 "$MAILKEEP" "$WORK/bin/mailkeep" || fail "cannot copy $MAILKEEP"
echo "== two relays, one backup, in $WORK (kept on failure, or with KEEP_WORK=1)"
# In the background, so that a SIGTERM, SIGINT or SIGHUP to this script (a CI time limit,
# Ctrl-C) is passed on to e2e.py, which then stops its daemons and cleans trusted_configs
# itself (its own SIGTERM handler); the checks below run after it in every case.
/usr/bin/python3 -B "$HERE/e2e.py" "$WORK" "$WORK/bin/mailkeep" 2>&1 &
PY=$!
interrupted=0
stop_test() { interrupted=1; echo "interrupted: stopping e2e.py ($PY)"; kill -TERM "$PY" 2>/dev/null; }
trap stop_test TERM INT HUP
wait "$PY"; rc=$?
while kill -0 "$PY" 2>/dev/null; do wait "$PY"; rc=$?; done   # a trapped signal ends `wait` early
trap - TERM INT HUP
[ $interrupted = 1 ] && rc=1
# e2e.py stops what it starts; this is the last line of defence, by pid, for this run only
left=0
for pid in $(pgrep -f "$WORK" || true); do
    echo "killing leftover process $pid: $(tr '\0' ' ' < /proc/"$pid"/cmdline 2>/dev/null)"
    kill -TERM "$pid" 2>/dev/null
    left=1
done
if [ $left = 1 ]; then
    echo "0 passed, 1 failed (processes left running)"
    rc=1
fi
# and for the configs it trusted: none of this run's may stay in trusted_configs
TRUSTED=/etc/exim4/trusted_configs
if [ -e "$TRUSTED" ] && grep -q "^$WORK/" "$TRUSTED"; then
    echo "this run's configs left in $TRUSTED: $(grep "^$WORK/" "$TRUSTED" | tr '\n' ' ')(removed)"
    sed -i "\\|^$WORK/|d" "$TRUSTED"
    echo "0 passed, 1 failed ($TRUSTED left changed)"
    rc=1
fi
if [ "$rc" = 0 ] && [ "${KEEP_WORK:-0}" != 1 ]; then
    rm -rf "$WORK"
fi
exit "$rc"
