#!/bin/bash
# Builds target/debian/mailkeep_<version>_<arch>.deb with dpkg-deb: the release binary
# (without the test hooks: no --features), man pages and completions generated from the CLI
# definition, the Exim and Postfix snippets as examples, the changelog, copyright and lintian overrides,
# the systemd units of the timers (status every 5 minutes, check weekly, expire and seal daily),
# /etc/default/mailkeep (a conffile: the retention period, unset), and maintainer
# scripts that create the unprivileged user, initialise the backup root and enable the timers.
# tests/package/run-e2e.sh checks it with lintian (no errors) and installs it.
# usage: packaging/build-deb.sh      (prints the path of the .deb as its last line)
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=packaging
BIN=$(packaging/cargo-static.sh build --quiet | tail -n 1)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# A native package: its version is Cargo.toml's, and the changelog's top entry names it.
LOGGED=$(sed -n '1s/^mailkeep (\([^)]*\)).*/\1/p' "$HERE/changelog")
if [ "$LOGGED" != "$VERSION" ]; then
    echo "build-deb: $HERE/changelog's top entry is for '$LOGGED', Cargo.toml's version is $VERSION: add an entry" >&2
    exit 65
fi
ARCH=$(dpkg --print-architecture)
STAGE=target/debian/stage
rm -rf "$STAGE"
install -d "$STAGE/DEBIAN" "$STAGE/usr/bin" "$STAGE/usr/share/man/man1" \
    "$STAGE/usr/share/bash-completion/completions" "$STAGE/usr/share/zsh/vendor-completions" \
    "$STAGE/usr/share/doc/mailkeep/examples" "$STAGE/usr/share/lintian/overrides" "$STAGE/lib/systemd/system"
install -m 0755 "$BIN" "$STAGE/usr/bin/mailkeep"
# Stripped as dh_strip would: the symbols, and the .comment and .note sections nothing reads.
strip --remove-section=.comment --remove-section=.note "$STAGE/usr/bin/mailkeep"
"$BIN" generate man "$STAGE/usr/share/man/man1"
gzip -9n "$STAGE"/usr/share/man/man1/*.1
gen=$(mktemp -d); trap 'rm -rf "$gen"' EXIT
"$BIN" generate completions "$gen"
install -m 0644 "$gen/mailkeep.bash" "$STAGE/usr/share/bash-completion/completions/mailkeep"
install -m 0644 "$gen/_mailkeep" "$STAGE/usr/share/zsh/vendor-completions/_mailkeep"
cp -r exim-snippets/. "$STAGE/usr/share/doc/mailkeep/examples/"
# The Postfix pieces (issue 23) beside the Exim ones, which they refer to (accounts.example,
# update-provider-relays*.example.sh).
cp -r postfix-snippets/. "$STAGE/usr/share/doc/mailkeep/examples/postfix/"
find "$STAGE/usr/share/doc/mailkeep/examples" -type f -exec chmod 0644 {} + 
find "$STAGE/usr/share/doc/mailkeep/examples" -name '*.sh' -exec chmod 0755 {} +
install -m 0644 README.md "$STAGE/usr/share/doc/mailkeep/README.md"
install -m 0644 "$HERE/copyright" "$STAGE/usr/share/doc/mailkeep/copyright"
gzip -9nc "$HERE/changelog" > "$STAGE/usr/share/doc/mailkeep/changelog.gz"
chmod 0644 "$STAGE/usr/share/doc/mailkeep/changelog.gz"
install -m 0644 "$HERE/lintian-overrides" "$STAGE/usr/share/lintian/overrides/mailkeep"
# The move into a new provider (issue 22): outside /usr/share/doc, which minimal systems drop.
install -D -m 0755 restore/to-imap.sh "$STAGE/usr/share/mailkeep/restore/to-imap.sh"
install -m 0644 "$HERE"/systemd/mailkeep-*.service "$HERE"/systemd/mailkeep-*.timer "$HERE"/systemd/mailkeep-*.socket "$STAGE/lib/systemd/system/"
for s in postinst prerm postrm; do install -m 0755 "$HERE/$s" "$STAGE/DEBIAN/$s"; done
install -d "$STAGE/etc/default"
install -m 0644 "$HERE/default/mailkeep" "$STAGE/etc/default/mailkeep"
echo /etc/default/mailkeep > "$STAGE/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" "$HERE/control.in" > "$STAGE/DEBIAN/control"
(cd "$STAGE" && find usr lib -type f -exec md5sum {} + > DEBIAN/md5sums)
OUT=target/debian/mailkeep_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$OUT" >/dev/null
echo "$OUT"
