#!/usr/bin/env bash
# Runs gnet v2.10.0's own test suite against this patched copy (the tests
# are not vendored here): a scratch copy of this folder plus the release's
# *_test.go files, every test address moved to 127.0.0.1 and its port P to
# PORT_BASE + P mod 900 (the shared machine allows each user a port range;
# the mapping keeps the release's ports distinct), then
# go test -short -count=1 -skip TestBindToDevice ./... (TestBindToDevice
# binds to the Ethernet device on all addresses: not allowed here).
#
#   third_party/gnet/upstream-tests.sh [TAGS]     # PORT_BASE (default 22100), KEEP_LOG=FILE
#
# TAGS: e.g. poll_opt or gc_opt, passed to go test -tags.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${PORT_BASE:-22100}
src=$(go mod download -json github.com/panjf2000/gnet/v2@v2.10.0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$here"/. "$work"/
(cd "$src" && find . -name '*_test.go' -print0 | xargs -0 -I{} cp --parents {} "$work"/)
chmod -R u+w "$work"
cat >"$work/ports.py" <<'PY'
import re, sys
base = int(sys.argv[1])
for p in sys.argv[2:]:
    s = open(p).read()
    # ":9991" (a port alone: listen on all addresses) -> "127.0.0.1:<base + 9991 % 900>";
    # "[v6]:9991" keeps its address but "[::]" (all) becomes "[::1]"
    port = lambda m: str(base + int(m.group(1)) % 900)
    s = s.replace("[::]:", "[::1]:")
    s = re.sub(r'\]:(\d{4,5})\b', lambda m: "]:" + port(m), s)
    s = re.sub(r'(?<![0-9.\w\]]):(\d{4,5})\b', lambda m: "127.0.0.1:" + port(m), s)
    open(p, "w").write(s)
PY
find "$work" -name '*_test.go' -print0 | xargs -0 python3 "$work/ports.py" "$base"
cd "$work"
go test -short -count=1 ${1:+-tags "$1"} -skip TestBindToDevice -v ./... >"$work/test.log" 2>&1 || true
grep -E '^(ok|FAIL|--- FAIL|panic)' "$work/test.log" || true
grep -A3 '^running tests:' "$work/test.log" || true # a timeout names the test that hung
[ -z "${KEEP_LOG:-}" ] || cp "$work/test.log" "$KEEP_LOG"
echo "passed: $(grep -c -- '--- PASS' "$work/test.log")  skipped: $(grep -c -- '--- SKIP' "$work/test.log")  failed: $(grep -c -- '--- FAIL' "$work/test.log")"
! grep -q -- '--- FAIL\|^FAIL' "$work/test.log"
