#!/bin/sh
# Regenerates packaging/symbol-order.txt: the functions `mailkeep deliver` runs, in the order
# callgrind first meets them, for the linker to lay out side by side (cargo-static.sh hands
# the file to lld's --symbol-ordering-file).
#
#   packaging/symbol-order.sh [BINARY]     default: a fresh packaging/cargo-static.sh build
#
# Why: Exim starts one process per message, and every page of code a process runs is a page
# fault. The few hundred functions of a delivery were spread over 4.5 MB of .text; side by
# side they take a few pages (12 text faults a delivery instead of 29; 6 to 8 % less CPU a
# delivery, docs/BENCHMARKS.md). The list is only a layout hint: a name that no longer
# exists (code changed since the list was made) is skipped, which costs locality, never
# correctness. Rerun this after larger changes to the delivery path; it prints how many
# names it found in the binary.
#
# Needs valgrind. Runs deliveries in a temporary root only.
set -eu
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "symbol-order.sh: needs valgrind (apt install valgrind)" >&2; exit 69; }
[ -e packaging/symbol-order.txt ] || : > packaging/symbol-order.txt  # the build reads it
bin=${1:-$(packaging/cargo-static.sh build | tail -n 1)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'alice\n' > "$work/accounts"
msg=examples/message.eml

# One run per path a delivery takes: the benchmark's (no log), Exim's (accounts file,
# syslog or its stderr fallback), with --dedup a new Message-ID and then the same one again.
n=0
run() {
    n=$((n + 1))
    SENDER=erika@outside.example valgrind -q --tool=callgrind --demangle=no \
        --callgrind-out-file="$work/cg.$n" "$bin" deliver --root "$work/root" --user alice \
        --direction in --rcpt alice@ourdomain.example --allow-root "$@" < "$msg" 2>/dev/null
}
mkdir "$work/root"
run --log none
run --accounts "$work/accounts"
run --log none --dedup
run --log none --dedup

# Function names as callgrind defines them (fn= and cfn= lines), first appearance first;
# "'2" marks a recursion level, "0x..." an address without a name.
for i in $(seq 1 "$n"); do
    sed -n "s/^c\{0,1\}fn=([0-9]*) //p" "$work/cg.$i"
done | sed "s/'[0-9]*\$//" | grep -v '^0x\|^(' | awk '!seen[$0]++' > packaging/symbol-order.txt

nm --defined-only "$bin" | awk '{print $NF}' | sort -u > "$work/defined"
found=$(sort -u packaging/symbol-order.txt | comm -12 - "$work/defined" | wc -l)
echo "packaging/symbol-order.txt: $(wc -l < packaging/symbol-order.txt) functions, $found of them in $bin" >&2
