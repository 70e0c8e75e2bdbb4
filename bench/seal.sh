#!/bin/bash
# `mailkeep seal` on N messages (default 100 000, bench/corpus.py's mix: 2-20 KB, 1% 0.2-2 MB)
# in one user's new/, against `sha256sum` on the same files: messages/s and MB/s, with a cold
# cache (after dropping the page cache, when we may) and a warm one; then an incremental run
# with nothing new (index lookups only, no file opened).
#   bench/seal.sh [COUNT]     (MAILKEEP=path/to/binary, default target/release/mailkeep)
set -euo pipefail
count=${1:-100000}
bin=$(realpath "${MAILKEEP:-target/release/mailkeep}")
here=$(dirname "$0")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
root=$dir/root
mkdir "$root"
allow=; [ "$(id -u)" = 0 ] && allow=--allow-root
"$bin" init --root "$root" $allow > /dev/null
python3 "$here/corpus.py" dir "$dir/corpus" "$count" > /dev/null
mkdir -p "$root/bench/new" "$root/bench/cur" "$root/bench/tmp"
# Maildir names as deliver gives them; a rename, so the files stay where corpus.py wrote them.
python3 - "$dir/corpus/list" "$root/bench/new" <<'PY'
import os, sys
for i, f in enumerate(open(sys.argv[1]).read().split()):
    os.rename(f, f"{sys.argv[2]}/1796000000.M{i}P1Q1.bench,S={os.path.getsize(f)}")
PY
bytes=$(du -sb "$root/bench/new" | cut -f1)
mb=$(echo "scale=1; $bytes / 1000000" | bc)
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop the page cache: cold is warm)" >&2; }
rate() { # NAME SECONDS
    echo "$1: $count messages, $mb MB in $2 s: $(echo "$count / $2" | bc) messages/s, $(echo "scale=1; $mb / $2" | bc) MB/s"
}
timed() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
sha() { cd "$root/bench/new" && find . -type f -print0 | xargs -0 sha256sum > /dev/null; }
for cache in cold warm; do
    [ "$cache" = cold ] && drop
    rate "sha256sum ($cache cache)" "$(timed sha)"
    rm -rf "$root/.mailkeep/seals"
    [ "$cache" = cold ] && drop
    rate "mailkeep seal ($cache cache)" "$(timed /usr/bin/time -f %M -o "$dir/rss" "$bin" seal --root "$root" --quiet $allow)"
    echo "  peak RSS $(($(cat "$dir/rss") / 1024)) MB, $(ls "$root/.mailkeep/seals" | grep -c '\.seal$') seals"
done
echo "mailkeep seal again, nothing new: $(timed "$bin" seal --root "$root" --quiet $allow) s"
