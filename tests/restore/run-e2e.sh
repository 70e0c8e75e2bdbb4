#!/bin/bash
# Moving the mail into a new mailbox, end to end (issue 22): a backup served by Dovecot as
# `mailkeep serve-config dovecot` configures it is copied by restore/to-imap.sh (mbsync)
# into a second, empty Dovecot with a 25 MB message limit, both on loopback; every message
# is checked on the target through imaplib (e2e.py says what), twice. Both servers are
# stopped by pid; nothing may be left running.
#
# Usage (as root, after tests/imap/setup.sh, tests/install-deps.sh (isync) and a build):
#   tests/restore/run-e2e.sh
# Env:
#   MAILKEEP           mailkeep binary (default: <repo>/target/release/mailkeep)
#   MAILKEEP_E2E_ROOT  a backup root left by tests/exim/run-e2e.sh, copied in (cp -a)
#   KEEP_WORK=1        keep the work dir (/var/tmp/mailkeep-restore.XXXXXX) even on success
# Output: one line per check; the last line is "N passed, M failed".
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MAILKEEP=${MAILKEEP:-$REPO/target/release/mailkeep}
fail() { echo "ERROR: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (servers, setpriv)"
[ -x "$MAILKEEP" ] || fail "mailkeep binary $MAILKEEP missing (cargo build --release, or set MAILKEEP=)"
[ -x /usr/sbin/dovecot ] || fail "Dovecot missing: run tests/imap/setup.sh"
command -v mbsync >/dev/null || fail "mbsync missing: apt install isync (tests/install-deps.sh)"
getent passwd mailbackup >/dev/null || fail "user mailbackup missing: run tests/imap/setup.sh"

WORK=$(mktemp -d /var/tmp/mailkeep-restore.XXXXXX) || fail "mktemp"
chmod 755 "$WORK"
mkdir "$WORK/bin" && install -m 755 "$MAILKEEP" "$WORK/bin/mailkeep" || fail "cannot copy $MAILKEEP"
echo "== move-to-a-new-provider test in $WORK (kept on failure, or with KEEP_WORK=1)"
/usr/bin/python3 -B "$HERE/e2e.py" "$WORK" "$WORK/bin/mailkeep" "$REPO" 2>&1
rc=$?
left=0
for pid in $(pgrep -f "$WORK" || true); do
    echo "killing leftover process $pid: $(tr '\0' ' ' < /proc/"$pid"/cmdline 2>/dev/null)"
    kill -TERM "$pid" 2>/dev/null
    left=1
done
if [ $left = 1 ]; then
    read -r p f < "$WORK/summary" || p=0 f=0
    echo "${p:-0} passed, $(( ${f:-0} + 1 )) failed"
    rc=1
fi
if [ "$rc" = 0 ] && [ "${KEEP_WORK:-0}" != 1 ]; then
    rm -rf "$WORK"
fi
exit "$rc"
