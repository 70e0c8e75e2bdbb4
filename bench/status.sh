#!/bin/bash
# `mailkeep status` on a generated root of N users (default 10 000), each with an INBOX and a
# Sent folder holding one message: the issue asks for under 2 s. status never lists a
# folder, so the messages per folder do not change its cost; the users do.
#   bench/status.sh [USERS]     (MAILKEEP=path/to/binary, default target/release/mailkeep)
set -euo pipefail
users=${1:-10000}
bin=${MAILKEEP:-target/release/mailkeep}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
root=$dir/root
mkdir -p "$root/.mailkeep"
printf '{"id":"00000000000000000000000000000000","created":%s}\n' "$(date +%s)" > "$root/.mailkeep/root.json"
for ((i = 0; i < users; i++)); do
    u=$root/user$i
    mkdir -p "$u/new" "$u/cur" "$u/tmp" "$u/.Sent/new" "$u/.Sent/cur" "$u/.Sent/tmp"
    : > "$u/new/1.M1P1.bench,S=0"
    : > "$u/.Sent/new/1.M1P1.bench,S=0"
done
sync
awk -v n="$users" 'BEGIN { for (i = 0; i < n; i++) print "user" i }' > "$dir/accounts"
for run in cold warm; do
    [ "$run" = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
    start=$(date +%s.%N)
    "$bin" status --root "$root" --accounts "$dir/accounts" --format prometheus --per-user > /dev/null || true
    end=$(date +%s.%N)
    echo "status ($run cache, $users users, --accounts, --per-user): $(echo "$end - $start" | bc) s"
done
