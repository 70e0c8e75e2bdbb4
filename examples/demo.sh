#!/bin/sh
# Runs mailkeep's main job on the bundled example: Exim hands a message to
# `mailkeep deliver`, which stores it durably in alice's Maildir under a demo root.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet
ROOT=${1:-/tmp/mailkeep-demo}
mkdir -p "$ROOT"
# Once per backup root: the marker without which nothing is stored (an unmounted volume's
# empty mount point has none). --adopt: a demo root from an earlier run is taken as it is.
./target/release/mailkeep init --root "$ROOT" --adopt --allow-root
# As Exim's pipe transport would call it (Exim sets SENDER in the environment).
# --allow-root only because a demo may run as root; Exim runs it as a dedicated user.
SENDER=erika@outside.example ./target/release/mailkeep deliver \
    --root "$ROOT" --user alice --direction in --rcpt alice@ourdomain.example \
    --log stderr --allow-root < examples/message.eml
f=$(ls -t "$ROOT"/alice/new/* | head -1)
echo "stored: $f"
cat "$f"
