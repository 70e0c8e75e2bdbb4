#!/bin/bash
# The whole test suite: unit and integration tests (cargo), then the end-to-end runs with
# the real Exim, Dovecot and Courier. Run as root on a machine prepared by
# tests/install-deps.sh (the README's test command, .ci/run, does both).
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
cargo build --release --locked || exit 1
cargo test --release --locked 2>&1 | tee /tmp/mailkeep-cargo-test.log || rc=1
for t in tests/*/run-e2e.sh; do
    [ -x "$t" ] || continue
    echo "== $t"
    MAILKEEP="$PWD/target/release/mailkeep" "$t" || rc=1
done
exit $rc
