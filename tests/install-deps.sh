#!/bin/bash
# Installs, idempotently and without starting any system daemon, what the test suite
# uses: Python 3 (the independent Maildir reader), mblaze (mexport writes mbox files for the
# replay tests), lintian, binutils' strings and systemd's systemd-analyze (the package test),
# Exim 4, Dovecot, Courier's parts, Postfix unpacked beside Exim (tests/postfix/setup.sh),
# prometheus_client (the status test parses the Prometheus textfile with it), isync (mbsync:
# the move-to-a-new-provider test, tests/restore), Dovecot's LMTP server (bench/relay.sh's
# set-up (e)).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: not root, assuming the packages are installed" >&2
    exit 0
fi
POLICY=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod 755 "$POLICY"; added_policy=1
fi
trap '[ $added_policy = 1 ] && rm -f "$POLICY"' EXIT
need=(python3 python3-prometheus-client util-linux adduser strace mblaze lintian binutils systemd isync dovecot-lmtpd)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for s in tests/*/setup.sh; do
    [ -x "$s" ] && "$s"
done
exit 0
