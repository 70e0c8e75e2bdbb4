#!/bin/bash
# Prepare a Debian 12 machine (root, no systemd needed) for tests/exim/run-e2e.sh:
#   * installs exim4-daemon-light exim4-config swaks python3-aiosmtpd iproute2 procps
#     (skipped when all are already installed; idempotent),
#   * keeps package scripts from starting a system Exim (policy-rc.d guard),
#   * creates the unprivileged system user "mailbackup" the pipe transports
#     run mailkeep as (Exim never runs local deliveries as root).
# Safe to run repeatedly. Usage: sudo tests/exim/setup.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root" >&2; exit 1; }

PKGS="exim4-daemon-light exim4-config swaks python3-aiosmtpd iproute2 procps"
PIPE_USER=${PIPE_USER:-mailbackup}

missing=
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done

if [ -n "$missing" ]; then
    # Keep postinst scripts from starting a system Exim on port 25. Docker-style
    # images already ship a policy-rc.d that exits 101; otherwise install one
    # for the duration of the install and remove it again.
    POLICY=/usr/sbin/policy-rc.d
    ADDED_POLICY=0
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$POLICY"
        chmod 755 "$POLICY"
        ADDED_POLICY=1
    fi
    cleanup() { if [ "$ADDED_POLICY" = 1 ]; then rm -f "$POLICY"; fi; }
    trap cleanup EXIT
    echo "setup.sh: installing:$missing"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $PKGS >/dev/null
else
    echo "setup.sh: packages already installed"
fi

# A system Exim started anyway (real init, older image): stop it; the test runs
# its own instance with its own config, spool and ports.
if [ -s /run/exim4/exim.pid ]; then
    kill "$(cat /run/exim4/exim.pid)" 2>/dev/null || true
fi

if ! getent passwd "$PIPE_USER" >/dev/null; then
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin "$PIPE_USER"
    echo "setup.sh: created system user $PIPE_USER"
else
    echo "setup.sh: user $PIPE_USER exists"
fi

echo "exim:     $(/usr/sbin/exim4 -bV 2>/dev/null | head -1)"
echo "swaks:    $(swaks --version 2>&1 | head -1)"
echo "aiosmtpd: $(/usr/bin/python3 -c 'import aiosmtpd; print(aiosmtpd.__version__)')"
echo "user:     $(id "$PIPE_USER")"
