#!/bin/bash
# The whole test suite: unit and integration tests (cargo), then the end-to-end runs with
# the real Exim, Postfix, Dovecot and Courier. Run as root on a machine prepared by
# tests/install-deps.sh (the README's test command, .ci/run, does both).
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
# cargo test with the test hooks (MAILKEEP_FAULT, src/fault.rs) that the crash and clock
# tests need; without the feature those tests are ignored, not passed.
packaging/cargo-static.sh test --features fault-injection 2>&1 | tee /tmp/mailkeep-cargo-test.log || rc=1
# The binary the end-to-end runs use is the one the package ships: statically linked
# (packaging/cargo-static.sh), without the test hooks. Built after the tests because both
# builds write the same path and the last one owns it.
BIN=$PWD/$(packaging/cargo-static.sh build | tail -n 1) || exit 1
if grep -q MAILKEEP_FAULT "$BIN"; then
    echo "run-all: $BIN has the test hooks (MAILKEEP_FAULT) compiled in; the end-to-end runs need the shipped build" >&2
    exit 1
fi
# The Exim test leaves its filled backup root for the restore test, which serves it (with
# a Takeout-style replay and live copies of its own) through Dovecot and Courier.
EXIM_ROOT=$(mktemp -d /tmp/mailkeep-exim-root.XXXXXX)
# The real Postfix (issue 23, run from its unpacked packages beside Exim) leaves its own
# root; the restore test serves that one too, after the loop.
POSTFIX_ROOT=$(mktemp -d /tmp/mailkeep-postfix-root.XXXXXX)
for t in tests/*/run-e2e.sh; do
    [ -x "$t" ] || continue
    echo "== $t"
    case "$t" in
        tests/postfix/*) MAILKEEP="$BIN" EXPORT_ROOT="$POSTFIX_ROOT/root" "$t" || rc=1;;
        *) MAILKEEP="$BIN" EXPORT_ROOT="$EXIM_ROOT/root" MAILKEEP_E2E_ROOT="$EXIM_ROOT/root" "$t" || rc=1;;
    esac
done
if [ -d "$POSTFIX_ROOT/root" ]; then
    echo "== tests/imap/run-e2e.sh on the real Postfix's backup"
    MAILKEEP="$BIN" MAILKEEP_E2E_ROOT="$POSTFIX_ROOT/root" tests/imap/run-e2e.sh || rc=1
fi
rm -rf "$EXIM_ROOT" "$POSTFIX_ROOT"
# The side-by-side benchmark at CI size (issue 7): a measurement, printed for the log. It
# checks that every tool stored every message; a peer's failure must not block a landing,
# so its status is reported, not counted (mailkeep's own correctness is the tests' job).
if [ "$(id -u)" = 0 ] && [ -z "${MAILKEEP_SKIP_BENCH:-}" ]; then
    echo "== bench/run.sh --quick"
    bench/run.sh --quick --no-build --bin "$BIN" && cat /var/tmp/mailkeep-bench/BENCHMARKS-quick.md | sed -n '/^## One process/,/^## Targets/p' \
        || echo "bench: exit $? (see above)"
fi
# The relay's view at CI size (issue 24): what each way of copying costs Exim, 200 messages,
# one round. A measurement for the log, never a failed landing.
if [ "$(id -u)" = 0 ] && [ -z "${MAILKEEP_SKIP_BENCH:-}" ]; then
    echo "== bench/relay.sh --quick"
    bench/relay.sh --quick --bin "$BIN" || echo "relay bench: exit $? (see above; not counted)"
fi
exit $rc
