#!/bin/bash
# The Debian package, installed for real: build it, check it with lintian (no errors),
# dpkg -i it on this machine, check its files, that its binary has no test hooks, and its
# maintainer scripts, run the real-Exim end-to-end test against the installed
# /usr/bin/mailkeep with the installed snippets, then purge it and check that the backup
# root and its mail are still there. Run as root (CI does); last line "N passed, M failed".
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=/var/lib/mailkeep
PASS=0; FAIL=0
ok()  { PASS=$((PASS+1)); echo "  ok   - $*"; }
bad() { FAIL=$((FAIL+1)); echo "  FAIL - $*"; }
check() { local d=$1; shift; if "$@" >/dev/null 2>&1; then ok "$d"; else bad "$d"; fi; }
expect() { if [ "$2" == "$3" ]; then ok "$1 [$3]"; else bad "$1: expected [$2], got [$3]"; fi; }
[ "$(id -u)" = 0 ] || { echo "run as root"; exit 1; }
if dpkg -s mailkeep >/dev/null 2>&1; then echo "mailkeep is installed already: refusing to touch it"; exit 1; fi

echo "== build"
DEB=$("$REPO/packaging/build-deb.sh" | tail -1)
check "package built ($DEB)" test -f "$REPO/$DEB"
check "lintian-free basics: control has Depends and Description" bash -c "dpkg-deb -f '$REPO/$DEB' Depends Description | grep -q libc6"

echo "== lintian"
if command -v lintian >/dev/null; then
    LINT=$(lintian --tag-display-limit 0 "$REPO/$DEB" 2>&1); lint_rc=$?
    [ -n "$LINT" ] && sed 's/^/    /' <<<"$LINT"
    expect "lintian finds no errors (E: lines)" 0 "$(grep -c '^E: ' <<<"$LINT")"
    expect "lintian exits 0" 0 "$lint_rc"
else
    bad "lintian is not installed (tests/install-deps.sh installs it)"
fi

echo "== install"
check "dpkg -i" dpkg -i "$REPO/$DEB"
expect "mailkeep --version names the commit" "mailkeep $(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1) (commit $(git -C "$REPO" rev-parse --short=12 HEAD))" "$(/usr/bin/mailkeep --version)"
for page in mailkeep mailkeep-deliver mailkeep-replay mailkeep-check mailkeep-serve-config mailkeep-dedup mailkeep-accounts \
    mailkeep-expire mailkeep-erase mailkeep-hold mailkeep-export mailkeep-seal; do
    check "man page $page(1)" test -s "/usr/share/man/man1/$page.1.gz"
done
check "man page has EXIT STATUS, FILES, EXAMPLES, SEE ALSO" bash -c \
    "zcat /usr/share/man/man1/mailkeep-deliver.1.gz | grep -q 'EXIT STATUS' && zcat /usr/share/man/man1/mailkeep-deliver.1.gz | grep -q 'SEE ALSO' && zcat /usr/share/man/man1/mailkeep-deliver.1.gz | grep -q '^mailkeep_inbox:'"
check "bash completion" grep -q mailkeep /usr/share/bash-completion/completions/mailkeep
check "zsh completion" grep -q '#compdef mailkeep' /usr/share/zsh/vendor-completions/_mailkeep
check "snippets in examples/" test -f /usr/share/doc/mailkeep/examples/exim4.conf.example
check "restore/to-imap.sh in /usr/share/mailkeep, executable" test -x /usr/share/mailkeep/restore/to-imap.sh
EX=/usr/share/doc/mailkeep/examples
for f in README.md main.cf.fragment master.cf.fragment transport.example recipient-access.pcre refuse-internal.pcre provider-relays.example; do
    check "Postfix snippet examples/postfix/$f" test -s "$EX/postfix/$f"
done
expect "examples/postfix/make-maps.sh is executable" "755" "$(stat -c %a "$EX/postfix/make-maps.sh" 2>/dev/null)"
expect "examples/update-provider-relays-m365.example.sh is executable" "755" \
    "$(stat -c %a "$EX/update-provider-relays-m365.example.sh" 2>/dev/null)"
check "changelog and copyright in /usr/share/doc/mailkeep" test -s /usr/share/doc/mailkeep/changelog.gz -a -s /usr/share/doc/mailkeep/copyright
# The test hooks (cargo feature fault-injection, src/fault.rs) must not be in the binary Exim runs.
if command -v strings >/dev/null; then
    expect "no test hooks in the installed binary: strings finds no MAILKEEP_FAULT" 0 "$(strings /usr/bin/mailkeep | grep -c MAILKEEP_FAULT)"
else
    bad "strings is not installed (binutils; tests/install-deps.sh installs it)"
fi
check "the user mailbackup exists after install (postinst creates it when absent)" getent passwd mailbackup
expect "postinst created the backup root" "mailbackup:mailbackup 750" "$(stat -c '%U:%G %a' "$ROOT")"
expect "postinst initialised it as mailbackup (mailkeep init)" "mailbackup 700 mailbackup 600" \
    "$(stat -c '%U %a' "$ROOT/.mailkeep") $(stat -c '%U %a' "$ROOT/.mailkeep/root.json" 2>/dev/null)"
MARKER=$(cat "$ROOT/.mailkeep/root.json" 2>/dev/null)
/var/lib/dpkg/info/mailkeep.postinst configure >/dev/null 2>&1
expect "postinst again: the marker is unchanged" "$MARKER" "$(cat "$ROOT/.mailkeep/root.json" 2>/dev/null)"

echo "== the timers"
for u in mailkeep-status.service mailkeep-status.timer mailkeep-check.service mailkeep-check.timer \
    mailkeep-expire.service mailkeep-expire.timer \
    mailkeep-seal.service mailkeep-seal.timer \
    mailkeep-lmtp.service mailkeep-lmtp.socket mailkeep-lmtp-sent.socket; do
    check "unit $u installed" test -s "/lib/systemd/system/$u"
done
expect "the LMTP sockets are shipped, not enabled (the pipe transport needs no daemon)" "" \
    "$(ls /etc/systemd/system/sockets.target.wants/ 2>/dev/null | grep mailkeep)"
check "the timers are enabled (deb-systemd-helper, no running systemd needed)" \
    test -L /etc/systemd/system/timers.target.wants/mailkeep-status.timer -a -L /etc/systemd/system/timers.target.wants/mailkeep-check.timer \
    -a -L /etc/systemd/system/timers.target.wants/mailkeep-expire.timer \
    -a -L /etc/systemd/system/timers.target.wants/mailkeep-seal.timer
# systemd-analyze verify needs no running systemd; it checks that ExecStart's binary exists
# (hence after the install) and, when man is there, that the Documentation= pages exist.
if command -v systemd-analyze >/dev/null; then
    man_opt=--man=no; command -v man >/dev/null && man_opt=--man=yes
    VERIFY=$(cd /lib/systemd/system && systemd-analyze verify "$man_opt" mailkeep-status.service mailkeep-status.timer \
        mailkeep-check.service mailkeep-check.timer mailkeep-expire.service mailkeep-expire.timer \
        mailkeep-seal.service mailkeep-seal.timer mailkeep-lmtp.service mailkeep-lmtp.socket \
        mailkeep-lmtp-sent.socket 2>&1); verify_rc=$?
    [ -n "$VERIFY" ] && sed 's/^/    /' <<<"$VERIFY"
    expect "systemd-analyze verify passes on the units ($man_opt)" "0 0" "$verify_rc $(grep -c . <<<"$VERIFY")"
else
    bad "systemd-analyze is not installed (package systemd; tests/install-deps.sh installs it)"
fi

echo "== retention: off until a period is set"
check "/etc/default/mailkeep is a conffile, the period commented out" bash -c \
    "dpkg-query -W -f='\${Conffiles}' mailkeep | grep -q /etc/default/mailkeep && grep -q '^#MAILKEEP_RETENTION=' /etc/default/mailkeep && ! grep -q '^MAILKEEP_RETENTION=' /etc/default/mailkeep"
# The service's command line as systemd runs it ($$ is a literal $), as mailbackup.
EXPIRE_CMD=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/mailkeep-expire.service | sed 's/\$\$/$/g')
OUT=$(env -i PATH=/usr/bin:/bin setpriv --reuid=mailbackup --regid=mailbackup --init-groups sh -c "$EXPIRE_CMD" 2>&1); rc=$?
expect "the expire service without a period removes nothing, says so, exits 0" "0 no retention period set" "$rc ${OUT:0:23}"
OUT=$(env -i PATH=/usr/bin:/bin MAILKEEP_RETENTION=7y setpriv --reuid=mailbackup --regid=mailbackup --init-groups sh -c "$EXPIRE_CMD" 2>&1); rc=$?
expect "the expire service with MAILKEEP_RETENTION=7y runs expire as mailbackup" "0" "$rc"
grep -q 'expired 0 messages older than 7y' <<<"$OUT" && ok "its output says what it did" || bad "expire's output: $OUT"

echo "== the real-Exim end-to-end test against the installed binary and snippets"
if SNIPPETS=/usr/share/doc/mailkeep/examples MAILKEEP=/usr/bin/mailkeep "$REPO/tests/exim/run-e2e.sh" > /tmp/mailkeep-package-e2e.log 2>&1; then
    ok "$(tail -1 /tmp/mailkeep-package-e2e.log) with the installed package"
else
    tail -40 /tmp/mailkeep-package-e2e.log; bad "exim e2e with the installed package: $(tail -1 /tmp/mailkeep-package-e2e.log)"
fi

echo "== the real-Postfix end-to-end test against the installed binary and snippets"
if SNIPPETS=/usr/share/doc/mailkeep/examples/postfix ACCOUNTS_EXAMPLE=/usr/share/doc/mailkeep/examples/accounts.example \
    MAILKEEP=/usr/bin/mailkeep "$REPO/tests/postfix/run-e2e.sh" > /tmp/mailkeep-package-postfix-e2e.log 2>&1; then
    ok "$(tail -1 /tmp/mailkeep-package-postfix-e2e.log) with the installed package (Postfix)"
else
    tail -40 /tmp/mailkeep-package-postfix-e2e.log; bad "postfix e2e with the installed package: $(tail -1 /tmp/mailkeep-package-postfix-e2e.log)"
fi

echo "== mail in the package's root, then purge"
printf 'Subject: kept after purge\nMessage-ID: <purge-test@mailkeep>\n\nbody\n' |
    setpriv --reuid=mailbackup --regid=mailbackup --init-groups /usr/bin/mailkeep deliver \
        --root "$ROOT" --user pkgtest --direction in --log none
expect "a message stored as mailbackup in $ROOT" 1 "$(ls "$ROOT/pkgtest/new" | wc -l)"
# A root an earlier version filled has mail and no marker: postinst adopts it.
rm -r "$ROOT/.mailkeep"
/var/lib/dpkg/info/mailkeep.postinst configure >/dev/null 2>&1
check "postinst adopts a root with mail and no marker (init --adopt)" test -f "$ROOT/.mailkeep/root.json"
expect "the adopted root's mail is untouched" 1 "$(ls "$ROOT/pkgtest/new" | wc -l)"
check "dpkg --purge" dpkg --purge mailkeep
check "the binary is gone" test ! -e /usr/bin/mailkeep
check "the backup root is still there" test -d "$ROOT"
expect "its mail is still there" 1 "$(ls "$ROOT/pkgtest/new" 2>/dev/null | wc -l)"
check "the user mailbackup is still there" getent passwd mailbackup
check "the timers are no longer enabled" test ! -e /etc/systemd/system/timers.target.wants/mailkeep-status.timer -a ! -e /etc/systemd/system/timers.target.wants/mailkeep-check.timer \
    -a ! -e /etc/systemd/system/timers.target.wants/mailkeep-expire.timer \
    -a ! -e /etc/systemd/system/timers.target.wants/mailkeep-seal.timer
check "the units are gone" test ! -e /lib/systemd/system/mailkeep-status.service -a ! -e /lib/systemd/system/mailkeep-expire.service -a ! -e /lib/systemd/system/mailkeep-seal.service
rm -rf "$ROOT/pkgtest"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
