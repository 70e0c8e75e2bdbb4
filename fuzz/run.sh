#!/bin/bash
# Runs every fuzz target for a bounded time (default 60 s each), seeded from the test
# fixtures, and turns each crash into a regression input the normal test suite replays:
#   mbox_reader  -> fuzz/regressions/mbox/<name>      (the mbox file, format byte removed)
#   headers      -> fuzz/regressions/deliver/<name>   (the message part, as deliver's stdin)
#   any target   -> fuzz/regressions/<target>/<name>  (the raw input: cargo fuzz run T FILE)
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz). Exits 1 on a crash.
#   fuzz/run.sh [SECONDS_PER_TARGET]
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
targets=(mbox_reader mbox_roundtrip headers)
cargo +nightly fuzz build -O 2>/dev/null || exit 2
mkdir -p corpus/mbox_reader corpus/mbox_roundtrip corpus/headers
i=0
for f in ../tests/fixtures/replay/*.mbox regressions/mbox/*; do
    [ -f "$f" ] || continue
    for sel in 0 1 2 3; do
        { printf "\\x$(printf %02x $sel)"; cat "$f"; } > "corpus/mbox_reader/seed-$i-$sel"
    done
    i=$((i + 1))
done
for f in ../tests/fixtures/deliver/*.in regressions/deliver/*; do
    [ -f "$f" ] || continue
    { printf 'a@b.example\xfealice\xfex@y.example\xfe'; cat "$f"; } > "corpus/headers/seed-$(basename "$f")"
    cp "$f" "corpus/mbox_roundtrip/seed-$(basename "$f")"
done
rc=0
for t in "${targets[@]}"; do
    echo "== $t for ${secs}s"
    mkdir -p "artifacts/$t"
    if ! cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
            -print_final_stats=1 2>"artifacts/$t.log"; then
        rc=1
    fi
    grep -E "^stat::number_of_executed_units|^Done|SUMMARY" "artifacts/$t.log" | sed "s/^/   /"
    for crash in artifacts/"$t"/crash-* artifacts/"$t"/oom-* artifacts/"$t"/timeout-*; do
        [ -f "$crash" ] || continue
        name=$(basename "$crash")
        mkdir -p "regressions/$t"
        cp "$crash" "regressions/$t/$name"
        case $t in
            mbox_reader) tail -c +2 "$crash" > "regressions/mbox/$name" ;;
            headers) python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(d.split(b"\xfe")[-1])' "$crash" > "regressions/deliver/$name" ;;
        esac
        echo "   crash kept as regression: fuzz/regressions/$t/$name"
    done
done
exit $rc
