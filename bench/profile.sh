#!/bin/bash
# Profiles of mailkeep behind the "what bounds it" notes in docs/BENCHMARKS.md.
#
#   bench/profile.sh [--work DIR] [--bin MAILKEEP]
#
# Needs a finished bench/run.sh (its corpus, mbox and WORK/bin) and perf + strace (run as
# root: perf_event_paranoid is 2 on Debian). Writes WORK/profile/*.txt:
#   startup.txt   where the CPU goes before the first read of stdin (400 starts)
#   deliver.txt   400 deliveries of one typical message, one process each
#   dedup.txt     the same with --dedup
#   replay.txt    mailkeep replay of the bulk mbox
#   syscalls.txt  strace of one delivery, with and without --dedup
# This VM has no hardware counters, so perf samples the cpu-clock software event.
set -euo pipefail
WORK=/var/tmp/mailkeep-bench
BIN=
while [ $# -gt 0 ]; do
    case "$1" in
        --work) WORK=$2; shift ;;
        --bin) BIN=$2; shift ;;
        *) echo "usage: bench/profile.sh [--work DIR] [--bin MAILKEEP]" >&2; exit 2 ;;
    esac
    shift
done
MK=${BIN:-$WORK/bin/mailkeep}
DRIVE=$WORK/bin/drive
OUT=$WORK/profile
CORPUS=$(ls -d "$WORK"/corpus-* | tail -n 1)
MBOX=$(ls "$WORK"/bulk-*.mbox | tail -n 1)
command -v perf >/dev/null || { echo "profile: perf is missing (apt-get install linux-perf)" >&2; exit 2; }
mkdir -p "$OUT"
R=$(mktemp -d "$WORK/profile-root.XXXXXX")
trap 'rm -rf "$R"' EXIT
ALLOW=()
[ "$(id -u)" = 0 ] && ALLOW=(--allow-root)
DELIVER=("$MK" deliver --root "$R" --user alice --direction in --rcpt alice@example.org --log none "${ALLOW[@]}")
mkdir -p "$R/alice/tmp" "$R/alice/new" "$R/alice/cur"
# The message of median size, 400 times.
TYPICAL=$(ls -S "$CORPUS"/*.eml | sed -n "$(( $(ls "$CORPUS"/*.eml | wc -l) / 2 ))p")
for _ in $(seq 400); do echo "$TYPICAL"; done > "$R/list"

top() { grep '%' | grep -v '^#' | head -n "$1" || true; }
report() { # DATA COMM TITLE (perf's output is cut short on purpose: no pipefail here)
    set +o pipefail
    {
        echo "== $3"
        echo "-- by shared object (self time)"
        perf report -i "$1" --comm "$2" --no-children --percentage relative --sort dso --stdio -g none 2>/dev/null | top 12
        echo "-- by symbol, self time"
        perf report -i "$1" --comm "$2" --no-children --percentage relative --sort sym --stdio -g none 2>/dev/null | top 40
        echo "-- by symbol, with callees"
        perf report -i "$1" --comm "$2" --children --percentage relative --sort sym --stdio -g none 2>/dev/null | top 40
    }
    set -o pipefail
}
COMM=$(basename "$MK" | cut -c1-15)

perf record -q -e cpu-clock -F 49999 -g -o "$R/startup.data" -- \
    sh -c "for i in \$(seq 400); do $DRIVE -s ${DELIVER[*]} >/dev/null; done"
report "$R/startup.data" "$COMM" "start-up: exec to the first read of stdin, 400 starts" > "$OUT/startup.txt"

perf record -q -e cpu-clock -F 29999 -g -o "$R/deliver.data" -- "$DRIVE" "$R/list" "$R" -- "${DELIVER[@]}" > "$R/drive.json"
{ cat "$R/drive.json"; report "$R/deliver.data" "$COMM" "400 deliveries of $(basename "$TYPICAL") ($(stat -c %s "$TYPICAL") bytes)"; } > "$OUT/deliver.txt"

head -n 400 "$CORPUS/list" > "$R/list400"
perf record -q -e cpu-clock -F 29999 -g -o "$R/dedup.data" -- "$DRIVE" "$R/list400" "$R" -- "${DELIVER[@]}" --dedup > "$R/drive.json"
{ cat "$R/drive.json"; report "$R/dedup.data" "$COMM" "400 deliveries with --dedup (the corpus' first 400: every Message-ID new)"; } > "$OUT/dedup.txt"

rm -rf "$R/replay"; mkdir "$R/replay"
perf record -q -e cpu-clock -F 9999 -g -o "$R/replay.data" -- \
    "$MK" replay --root "$R/replay" --user alice --domain example.org --log none "${ALLOW[@]}" "$MBOX" 2> "$R/replay.err"
{ tail -n 1 "$R/replay.err"; report "$R/replay.data" "$COMM" "replay of $MBOX"; } > "$OUT/replay.txt"

{
    for extra in "" --dedup; do
        echo "== one delivery $extra (after a first one set the folder up)"
        "${DELIVER[@]}" $extra < "$TYPICAL" || true
        strace -f -y -o "$R/one.strace" "${DELIVER[@]}" $extra < "$TYPICAL" || true
        grep -vE '^[0-9]+ +(mmap|mprotect|munmap|brk|read\(3|pread64\(3<.*libc|close|fstat|newfstatat\(3, "")' "$R/one.strace" | cut -c1-200
        echo
        strace -f -c -o "$R/one.count" "${DELIVER[@]}" $extra < "$TYPICAL" || true
        cat "$R/one.count"
    done
} > "$OUT/syscalls.txt" 2>&1
echo "profile: wrote $OUT/{startup,deliver,dedup,replay,syscalls}.txt" >&2
