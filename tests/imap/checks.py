"""How the end-to-end scripts (tests/imap, tests/restore, tests/multirelay) count and print
their checks: one line each, "  ok   - ..." or "  FAIL - ..." with the detail indented; the
last line of a run is "N passed, M failed" from PASS and FAIL."""

PASS = FAIL = 0


def ok(cond, desc, detail=""):
    global PASS, FAIL
    if cond:
        PASS += 1
        print(f"  ok   - {desc}")
    else:
        FAIL += 1
        print(f"  FAIL - {desc}")
        for line in str(detail).splitlines()[:40]:
            print(f"         | {line}")
    return cond
