#!/bin/bash
# End-to-end restore test: fills a backup root with the real mailkeep binary (live copies
# delivered as the unprivileged user mailbackup, a Google-Takeout replay, and the real-Exim
# test's backup when MAILKEEP_E2E_ROOT names one), runs `mailkeep check`, then serves the
# root with Dovecot (exactly the config `mailkeep serve-config dovecot` writes) and with
# Courier IMAP (unpacked by setup.sh), both on loopback only, and checks through imaplib,
# for every user: LIST and LSUB, every stored message (count, RFC822.SIZE, BODY[] against
# the file, Return-Path and Delivered-To, INTERNALDATE), and that the servers can move
# new/ to cur/ and set flags. Both servers are stopped by pid; nothing may be left running.
#
# Usage (as root, after tests/imap/setup.sh and cargo build --release):
#   tests/imap/run-e2e.sh
# Env:
#   MAILKEEP           mailkeep binary (default: <repo>/target/release/mailkeep); copied
#                      into the work dir, mode 755, so mailbackup can run it
#   MAILKEEP_E2E_ROOT  a backup root left by tests/exim/run-e2e.sh, copied in (cp -a)
#   COURIER_DIR        where setup.sh unpacked courier-imap (default /var/tmp/mailkeep-courier-imap)
#   KEEP_WORK=1        keep the work dir (/var/tmp/mailkeep-imap.XXXXXX) even on success
# Output: one line per check, server logs on failure; the last line is "N passed, M failed".
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MAILKEEP=${MAILKEEP:-$REPO/target/release/mailkeep}
COURIER_DIR=${COURIER_DIR:-/var/tmp/mailkeep-courier-imap}
fail() { echo "ERROR: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (servers, setpriv, unshare)"
[ -x "$MAILKEEP" ] || fail "mailkeep binary $MAILKEEP missing (cargo build --release, or set MAILKEEP=)"
[ -x /usr/sbin/dovecot ] || fail "Dovecot missing: run tests/imap/setup.sh"
[ -x "$COURIER_DIR/root/usr/bin/imapd" ] || fail "courier-imap not unpacked in $COURIER_DIR: run tests/imap/setup.sh"
getent passwd mailbackup >/dev/null || fail "user mailbackup missing: run tests/imap/setup.sh"

WORK=$(mktemp -d /var/tmp/mailkeep-imap.XXXXXX) || fail "mktemp"
chmod 755 "$WORK"
mkdir "$WORK/bin" && install -m 755 "$MAILKEEP" "$WORK/bin/mailkeep" || fail "cannot copy $MAILKEEP"
echo "== restore test in $WORK (kept on failure, or with KEEP_WORK=1)"
/usr/bin/python3 -B "$HERE/e2e.py" "$WORK" "$WORK/bin/mailkeep" "$COURIER_DIR/root" 2>&1
rc=$?
# e2e.py stops what it starts; this is the last line of defence, by pid, for this run only
left=0
for pid in $(pgrep -f "$WORK" || true); do
    echo "killing leftover process $pid: $(tr '\0' ' ' < /proc/"$pid"/cmdline 2>/dev/null)"
    kill -TERM "$pid" 2>/dev/null
    left=1
done
if [ $left = 1 ]; then
    read -r p f < "$WORK/summary" || p=0 f=0   # "PASSED FAILED", written by e2e.py
    echo "${p:-0} passed, $(( ${f:-0} + 1 )) failed"
    rc=1
fi
if [ "$rc" = 0 ] && [ "${KEEP_WORK:-0}" != 1 ]; then
    rm -rf "$WORK"
fi
exit "$rc"
