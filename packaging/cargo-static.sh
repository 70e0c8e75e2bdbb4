#!/bin/sh
# Builds (or tests) the binary mailkeep ships: glibc linked in statically.
#
#   packaging/cargo-static.sh build [CARGO ARGS]   prints the binary's path as its last line
#   packaging/cargo-static.sh test [CARGO ARGS]    the test suite, against that same build
#
# Why: Exim starts one `mailkeep deliver` per message, so process start-up is part of every
# delivery. A dynamic binary spends about a third of its start-up in the dynamic loader
# (libgcc_s, libm, libc, every symbol bound at start); a static one does not
# (docs/BENCHMARKS.md). glibc 2.34+ has its "files" and "dns" NSS sources inside libc, so
# the static binary still resolves users, groups and host names the usual way.
#
# `--target` is what keeps the flag off build scripts and proc macros, which cannot be
# static; it also puts the output under target/<host triple>/release/. A plain
# `cargo build --release` still works and gives a dynamic binary with the same behaviour.
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: packaging/cargo-static.sh build|test [CARGO ARGS]" >&2; exit 64; }
cmd=$1
shift
host=$(rustc -vV | sed -n 's/^host: //p')
case $host in
    *-linux-gnu) RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"; export RUSTFLAGS ;;
esac
# The functions a delivery runs, laid out side by side (packaging/symbol-order.sh says why).
# x86_64 Linux only: there rustc links with lld, which reads the list; names that are gone
# are skipped in silence.
case $host in
    x86_64-unknown-linux-gnu)
        RUSTFLAGS="$RUSTFLAGS -C link-arg=-Wl,--symbol-ordering-file=$PWD/packaging/symbol-order.txt"
        RUSTFLAGS="$RUSTFLAGS -C link-arg=-Wl,--no-warn-symbol-ordering"
        ;;
esac
cargo "$cmd" --release --locked --target "$host" "$@"
[ "$cmd" = build ] && echo "target/$host/release/mailkeep"
exit 0
