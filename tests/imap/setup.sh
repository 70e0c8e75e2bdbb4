#!/bin/bash
# Prepare a Debian 12 machine (root, no systemd needed) for tests/imap/run-e2e.sh:
#   * installs Dovecot (dovecot-core, dovecot-imapd) and Courier IMAP's dependencies
#     (skipped when all are installed; idempotent), with a policy-rc.d guard so no
#     package script starts a daemon on 143/993;
#   * courier-imap itself cannot be installed beside dovecot-imapd (it conflicts with
#     imap-server, which dovecot-imapd provides): `apt-get download` fetches its .deb from
#     the normal archive and `dpkg-deb -x` unpacks it into $COURIER_DIR/root; its imapd and
#     imaplogin run from there;
#   * creates the unprivileged system user "mailbackup" that mailkeep delivers as.
# Safe to run repeatedly. Usage: sudo tests/imap/setup.sh
# Env: COURIER_DIR (default /var/tmp/mailkeep-courier-imap)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root" >&2; exit 1; }

COURIER_DIR=${COURIER_DIR:-/var/tmp/mailkeep-courier-imap}
PIPE_USER=${PIPE_USER:-mailbackup}
PKGS="dovecot-core dovecot-imapd courier-base courier-authdaemon courier-authlib courier-authlib-userdb
      gamin libgamin0 libcourier-unicode4 libgdbm6 libidn12 python3 iproute2 procps util-linux openssl"
APT="apt-get -o DPkg::Lock::Timeout=300"

POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
cleanup() { if [ "$ADDED_POLICY" = 1 ]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT
guard() {
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod 755 "$POLICY"; ADDED_POLICY=1
    fi
}

missing=
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    guard
    echo "setup.sh: installing:$missing"
    $APT update -qq
    # shellcheck disable=SC2086
    $APT install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $PKGS >/dev/null
else
    echo "setup.sh: packages already installed"
fi

imapd_ok() {
    for b in usr/bin/imapd usr/lib/courier/courier/imaplogin; do
        [ -x "$COURIER_DIR/root/$b" ] || return 1
        ! ldd "$COURIER_DIR/root/$b" | grep -q 'not found' || return 1
    done
}
if imapd_ok; then
    echo "setup.sh: courier-imap already unpacked in $COURIER_DIR/root"
else
    mkdir -p "$COURIER_DIR/debs"
    cd "$COURIER_DIR/debs"
    rm -f courier-imap_*.deb
    # as root into a root-owned dir: apt's "unsandboxed download" note is harmless
    if ! $APT download -qq courier-imap 2>/dev/null; then
        $APT update -qq
        $APT download -qq courier-imap 2>&1 | grep -v 'Download is performed unsandboxed' || true
    fi
    rm -rf "$COURIER_DIR/root.new"
    dpkg-deb -x courier-imap_*.deb "$COURIER_DIR/root.new"
    rm -rf "$COURIER_DIR/root"
    mv "$COURIER_DIR/root.new" "$COURIER_DIR/root"
    imapd_ok || { echo "setup.sh: unpacked courier-imap does not run:" >&2
                  ldd "$COURIER_DIR/root/usr/bin/imapd" >&2; exit 1; }
    echo "setup.sh: courier-imap $(dpkg-deb -f courier-imap_*.deb Version) unpacked in $COURIER_DIR/root"
fi
# authdaemond's socket directory is compiled in (the test bind-mounts its own over it)
mkdir -p /run/courier/authdaemon

if ! getent passwd "$PIPE_USER" >/dev/null; then
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin "$PIPE_USER"
    echo "setup.sh: created system user $PIPE_USER"
fi
getent passwd dovecot dovenull >/dev/null || { echo "setup.sh: users dovecot/dovenull missing" >&2; exit 1; }
echo "dovecot:  $(dovecot --version)"
echo "user:     $(id "$PIPE_USER")"
