#!/bin/bash
# Prepare a Debian 12 machine (root) for the `accounts sync` tests (tests/accounts.rs): their
# fake Google (tests/accounts/fake_google.py) makes test keys and verifies the client's JWT
# with Python's `cryptography` module, Debian's python3-cryptography.
# Idempotent; tests/install-deps.sh runs it. Usage: sudo tests/accounts/setup.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root" >&2; exit 1; }
if ! dpkg -s python3 python3-cryptography >/dev/null 2>&1; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends python3 python3-cryptography >/dev/null
fi
/usr/bin/python3 -c 'import cryptography' || { echo "setup.sh: python3-cryptography unusable" >&2; exit 1; }
