#!/bin/bash
# Prepare a Debian 12 machine (root) for tests/postfix/run-e2e.sh WITHOUT installing
# Postfix: Debian's postfix and exim4 packages conflict (installing one removes the other)
# and Exim stays the system MTA. So Postfix's two packages are downloaded and unpacked
# into a private prefix (POSTFIX_DIR, default /var/tmp/mailkeep-postfix), which the test
# points daemon_directory, command_directory, shlib_directory and meta_directory at.
# Also: python3-aiosmtpd and iproute2 (sink, ss) if missing, the system user and group
# postfix/postdrop that Postfix's daemons run as (as the package's postinst makes
# them), and the user mailbackup the pipe runs mailkeep as. Nothing is started, no
# file outside POSTFIX_DIR is written but the user and group entries. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root" >&2; exit 1; }
DIR=${POSTFIX_DIR:-/var/tmp/mailkeep-postfix}
PIPE_USER=${PIPE_USER:-mailbackup}

missing=
for p in python3 python3-aiosmtpd iproute2 procps libpcre2-8-0; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    POLICY=/usr/sbin/policy-rc.d; ADDED_POLICY=0
    if [ ! -e "$POLICY" ]; then printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod 755 "$POLICY"; ADDED_POLICY=1; fi
    trap '[ "$ADDED_POLICY" = 1 ] && rm -f "$POLICY"' EXIT
    echo "setup.sh: installing:$missing"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x "$DIR/root/usr/sbin/postfix" ] || [ ! -e "$DIR/root/usr/lib/postfix/postfix-pcre.so" ]; then
    rm -rf "$DIR.new"; mkdir -p "$DIR.new/debs"
    # apt's sandbox user must be able to write where it downloads
    chown _apt "$DIR.new/debs" 2>/dev/null || true
    ( cd "$DIR.new/debs" && apt-get -o DPkg::Lock::Timeout=300 download postfix postfix-pcre >/dev/null 2>&1 ) || {
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        ( cd "$DIR.new/debs" && apt-get download postfix postfix-pcre >/dev/null )
    }
    for d in "$DIR.new"/debs/postfix_*.deb "$DIR.new"/debs/postfix-pcre_*.deb; do dpkg-deb -x "$d" "$DIR.new/root"; done
    # What postfix-pcre's postinst registers: the pcre: table type.
    mkdir -p "$DIR.new/root/etc/postfix/dynamicmaps.cf.d"
    printf 'pcre\tpostfix-pcre.so\tdict_pcre_open\n' > "$DIR.new/root/etc/postfix/dynamicmaps.cf.d/pcre"
    rm -rf "$DIR"; mv "$DIR.new" "$DIR"
    echo "setup.sh: unpacked $(basename "$DIR"/debs/postfix_*.deb) into $DIR/root"
else
    echo "setup.sh: Postfix already unpacked in $DIR"
fi

# The users Postfix's daemons and postdrop run as, as the package's postinst makes them.
getent group postdrop >/dev/null || groupadd --system postdrop
getent passwd postfix >/dev/null || useradd --system --user-group --home-dir /var/spool/postfix \
    --no-create-home --shell /usr/sbin/nologin postfix
getent passwd "$PIPE_USER" >/dev/null || useradd --system --user-group --home-dir /nonexistent \
    --no-create-home --shell /usr/sbin/nologin "$PIPE_USER"

echo "postfix:  $(LD_LIBRARY_PATH=$DIR/root/usr/lib/postfix "$DIR/root/usr/sbin/postconf" -d -h mail_version 2>/dev/null) (unpacked, $DIR)"
echo "aiosmtpd: $(/usr/bin/python3 -c 'import aiosmtpd; print(aiosmtpd.__version__)')"
