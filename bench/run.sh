#!/bin/bash
# The side-by-side benchmark of docs/BENCHMARKS.md: mailkeep against the delivery agents an
# admin runs today, one process per message as an MTA runs them, plus the bulk (mbox) side.
#
#   bench/run.sh            full run (about 45 minutes on 2 cores), rewrites docs/BENCHMARKS.md,
#                           then the scale curve (bench/scale.sh: 5 GB below /var/tmp/mailkeep-scale,
#                           3 minutes to make the backups the first time, then about 5 minutes)
#   bench/run.sh --quick    small counts (under 3 minutes), report in $WORK/BENCHMARKS-quick.md
# The full run also runs bench/relay.sh (the relay's view, issue 24: about 10 more minutes) and puts
# its table, with bench/RELAY-NOTES.md, into the report.
#
# Options: --no-scale (no scale curve), --work DIR (default /var/tmp/mailkeep-bench: a fresh maildir per tool and round
# is made there, so it must be on the filesystem you want measured), --out FILE, --no-install,
# --no-build, --bin PATH (the mailkeep binary to measure; default: the shipped, static build
# of packaging/cargo-static.sh), and any of bench.py's options after `--` (e.g. -- --rounds 5).
#
# As root it installs the peers from Debian (apt), creates the unprivileged user mkbench and
# runs every tool as that user (maildrop, procmail and mailkeep all refuse or change behaviour
# as root). Run as another user it assumes the packages are installed and runs as itself.
# Exit status: 0 when every tool stored every message, 1 when one did not, 2 on set-up failure.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=/var/tmp/mailkeep-bench
OUT=
QUICK=0
INSTALL=1
BUILD=1
BIN=
SCALE=1
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --work) WORK=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        --no-scale) SCALE=0 ;;
        --bin) BIN=$2; BUILD=0; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "usage: bench/run.sh [--quick] [--no-scale] [--work DIR] [--out FILE] [--no-install] [--no-build] [--bin PATH] [-- bench.py options]" >&2; exit 2 ;;
    esac
    shift
done
if [ $QUICK = 1 ]; then
    SIZES=(--messages 120 --rounds 3 --blocks 3 --bulk-messages 5000 --bulk-rounds 1 --dedup-keys 1000,100000 --startup-samples 21 --settle 5)
    OUT=${OUT:-$WORK/BENCHMARKS-quick.md}
else
    SIZES=(--messages 2000 --rounds 3 --bulk-messages 100000 --bulk-rounds 3 --dedup-keys 1000,1000000)
    OUT=${OUT:-$REPO/docs/BENCHMARKS.md}
fi

PEERS=(safecat maildrop procmail dovecot-core getmail6 mblaze fdm mb2md)
TOOLS=(gcc strace time python3 util-linux)
if [ "$(id -u)" = 0 ] && [ $INSTALL = 1 ]; then
    missing=()
    for p in "${PEERS[@]}" "${TOOLS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "bench: installing ${missing[*]}" >&2
        # No daemon may start (dovecot-core would): the policy refuses every start.
        POLICY=/usr/sbin/policy-rc.d
        added_policy=0
        if [ ! -e $POLICY ]; then
            printf '#!/bin/sh\nexit 101\n' > $POLICY; chmod 755 $POLICY; added_policy=1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        [ $added_policy = 1 ] && rm -f $POLICY
    fi
fi
for c in safecat maildrop procmail /usr/lib/dovecot/dovecot-lda getmail_maildir mdeliver fdm mb2md gcc strace /usr/bin/time /usr/bin/python3; do
    command -v "$c" >/dev/null || { echo "bench: $c is missing (run as root to install it)" >&2; exit 2; }
done

if [ $BUILD = 1 ]; then
    BIN=$(packaging/cargo-static.sh build --quiet | tail -n 1)
fi
BIN=${BIN:-target/$(rustc -vV | sed -n 's/^host: //p')/release/mailkeep}
[ -x "$BIN" ] || { echo "bench: no mailkeep binary at $BIN (build it, or give --bin)" >&2; exit 2; }
RUNAS=()
if [ "$(id -u)" = 0 ]; then
    id mkbench >/dev/null 2>&1 ||
        useradd --system --user-group --home-dir "$WORK/home" --shell /usr/sbin/nologin mkbench
    RUNAS=(runuser -u mkbench --)
fi
mkdir -p "$WORK/bin"
# Private copies: a rebuild in the work tree cannot change the binary in the middle of a run.
cp "$BIN" "$WORK/bin/mailkeep"
cp bench/py_mailbox.py "$WORK/bin/"
gcc -O2 -Wall -o "$WORK/bin/drive" bench/drive.c
gcc -O2 -Wall -o "$WORK/bin/floor" bench/floor.c
# floor-dedup: the floor plus the SQLite work of `--dedup`, with the SQLite source mailkeep is
# built from (Cargo.lock's libsqlite3-sys) and its options (.cargo/config.toml).
SQLITE_VERSION=$(sed -n '/^name = "libsqlite3-sys"$/{n;s/^version = "\(.*\)"$/\1/p}' Cargo.lock)
SQLITE_DIR=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"libsqlite3-sys-$SQLITE_VERSION/sqlite3" 2>/dev/null | head -n 1)
rm -f "$WORK/bin/floor-dedup"
if [ -n "$SQLITE_DIR" ]; then
    SQLITE_FLAGS=$(python3 -c 'import tomllib; print(tomllib.load(open(".cargo/config.toml", "rb"))["env"]["LIBSQLITE3_FLAGS"])')
    # shellcheck disable=SC2086 # the flags are words
    gcc -O2 -w -c -o "$WORK/bin/sqlite3.o" "$SQLITE_DIR/sqlite3.c" $SQLITE_FLAGS -DSQLITE_THREADSAFE=0
    gcc -O2 -Wall -DWITH_SQLITE -I "$SQLITE_DIR" -o "$WORK/bin/floor-dedup" bench/floor.c "$WORK/bin/sqlite3.o" -lm
else
    echo "bench: no libsqlite3-sys $SQLITE_VERSION source under cargo's registry: no floor with the dedup store" >&2
fi
cp bench/bench.py bench/corpus.py "$WORK/bin/"
[ "$(id -u)" = 0 ] && chown -R mkbench:mkbench "$WORK"

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && COMMIT="$COMMIT+uncommitted"
echo "bench: load average $(cut -d' ' -f1-3 /proc/loadavg) (the figures are noisy above ~0.5)" >&2
status=0
"${RUNAS[@]}" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$WORK/home" MAILKEEP_COMMIT="$COMMIT" \
    /usr/bin/python3 "$WORK/bin/bench.py" --work "$WORK" --out "$WORK/results.json" "${SIZES[@]}" "${EXTRA[@]}" ||
    status=$?
[ $status -gt 1 ] && exit 2
CMD="bench/run.sh"
[ $QUICK = 1 ] && CMD="bench/run.sh --quick"
[ ${#EXTRA[@]} -gt 0 ] && CMD="$CMD -- ${EXTRA[*]}"
# The relay's view (issue 24), in the full run: its own script, its table into the report.
RELAY=()
if [ $QUICK = 0 ] && [ "$(id -u)" = 0 ]; then
    bench/relay.sh --bin "$BIN" --out "$WORK/relay.md" && RELAY=(--relay "$WORK/relay.md" --relay-notes bench/RELAY-NOTES.md) ||
        echo "bench: bench/relay.sh failed (exit $?): no relay table in the report" >&2
fi
/usr/bin/python3 bench/report.py "$WORK/results.json" --command "$CMD" --notes bench/NOTES.md "${RELAY[@]}" > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "bench: wrote $OUT (raw figures: $WORK/results.json)" >&2
# The scale curve, in the full run only (it needs 5 GB and minutes): its section of $OUT.
if [ $QUICK = 0 ] && [ $SCALE = 1 ]; then
    bench/scale.sh --bin "$BIN" --out "$OUT" || { echo "bench: the scale run failed" >&2; status=2; }
fi
exit $status
