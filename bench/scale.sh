#!/bin/bash
# The scale curve of docs/BENCHMARKS.md: wall time and peak RSS of check, status, seal,
# replay, export, expire and erase (those the binary has) on generated backups of 10 000,
# 100 000 and 1 000 000 messages, and status on 10 000 users (bench/scale.py says how the
# backups are made). Writes the "scale curve" section of docs/BENCHMARKS.md (--out FILE: of
# FILE) and scale.png beside it.
#
#   bench/scale.sh [--bin PATH] [--work DIR] [--out FILE] [--cold] [--no-docs] [-- scale.py options]
#
# The backups are generated once (about 2.5 minutes and 5 GB for all of them on the
# project's 2-core VM) and kept in WORK (default /var/tmp/mailkeep-scale) for later runs;
# a run on kept backups takes about 5 minutes (10 with --cold). --cold drops the page cache
# (root only) before every measured run: it slows everything else on the machine meanwhile.
# Default binary: a release build of this tree. Exit status: 0 done, 2 set-up failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=
WORK=/var/tmp/mailkeep-scale
DOCS=(--docs docs/BENCHMARKS.md)
EXTRA=()
ARGS="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift ;;
        --work) WORK=$2; shift ;;
        --cold) EXTRA+=(--cold) ;;
        --out) DOCS=(--docs "$2"); shift ;;
        --no-docs) DOCS=() ;;
        --) shift; EXTRA+=("$@"); break ;;
        *) echo "usage: bench/scale.sh [--bin PATH] [--work DIR] [--out FILE] [--cold] [--no-docs] [-- scale.py options]" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN=target/release/mailkeep
fi
[ -x "$BIN" ] || { echo "scale: no mailkeep binary at $BIN" >&2; exit 2; }
mkdir -p "$WORK/bin"
# A private copy: a rebuild in the work tree cannot change the binary in the middle of a run.
cp "$BIN" "$WORK/bin/mailkeep.scale"
# The plot needs matplotlib; as root it is installed, otherwise the plot is skipped with a note.
if ! /usr/bin/python3 -c "import matplotlib" 2>/dev/null && [ "$(id -u)" = 0 ]; then
    echo "scale: installing python3-matplotlib for the plot" >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        python3-matplotlib >/dev/null || echo "scale: no matplotlib: no plot" >&2
fi
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && COMMIT="$COMMIT+uncommitted"
echo "scale: load average $(cut -d' ' -f1-3 /proc/loadavg) (the figures are noisy above ~0.5)" >&2
exec /usr/bin/python3 bench/scale.py --bin "$WORK/bin/mailkeep.scale" --work "$WORK" "${DOCS[@]}" \
    --command "bench/scale.sh${ARGS:+ $ARGS}" --commit "$COMMIT" "${EXTRA[@]}"
