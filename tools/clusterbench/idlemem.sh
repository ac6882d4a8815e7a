#!/usr/bin/env bash
# Idle memory per subscribed connection on a clustered node against a single
# broker, same binary, alternating rounds: CONNS connections (3.1.1, clean
# session, each subscribed to its own topic) on n1 of a 3-node cluster, then
# on a single broker, each held HOLD (default 35 s: the cluster's client-id
# claims expire after 20 s, so what stays is the steady state). RSS growth
# per connection from tern bench conn --json (rss_per_conn_bytes); the
# clustered node also announces each subscription's filter to the others.
#
# Usage: tools/clusterbench/idlemem.sh [rounds]   (default 2; from the repository root)
# Environment: PORT_BASE (default 21500; uses 10 ports per round), TERN (default:
# built from this tree), CONNS (default 15000), HOLD (default 35s).
# Needs a per-process descriptor limit of 20,000 and python3, curl.
set -euo pipefail
ROUNDS=${1:-2}
CONNS=${CONNS:-15000}
HOLD=${HOLD:-35s}
PB=${PORT_BASE:-21500}
ulimit -n 20000
W=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
if [ -n "${TERN:-}" ]; then T=$TERN; else go build -o "$W/tern" ./cmd/tern; T="$W/tern"; fi
stopall() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
	pids=()
	rm -rf "$W"/d*
}
measure() { # label, port, pid
	"$T" bench conn --broker 127.0.0.1:$2 --broker-pid "$3" --conns "$CONNS" --connect-rate 5000 \
		--subscribe --source 127.0.0.2-127.0.0.5 --duration "$HOLD" --quiet --json >"$W/out.json"
	python3 - "$1" "$W/out.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
b = r.get("broker") or {}
print("%-22s connected %d  broker RSS %.1f MiB  per connection %d B" % (sys.argv[1], r["connect"]["connected"], b.get("rss_bytes", 0) / 2**20, round(b.get("rss_per_conn_bytes", 0))))
PY
}
echo "binary: $T  conns: $CONNS  hold: $HOLD  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
	B=$((PB + (r - 1) * 10))
	for n in 1 2 3; do
		peers=""
		for m in 1 2 3; do [ $m = $n ] || peers="$peers${peers:+,}127.0.0.1:$((B + 3 + m))"; done
		"$T" serve --listen 127.0.0.1:$((B + n - 1)) --data "$W/d$n" --node n$n --cluster-listen 127.0.0.1:$((B + 3 + n)) \
			--cluster-peers "$peers" --admin 127.0.0.1:$((B + 6 + n)) --log-level warn >"$W/n$n.log" 2>&1 &
		pids+=($!)
	done
	for _ in $(seq 100); do
		curl -fs "http://127.0.0.1:$((B + 7))/metrics" 2>/dev/null | grep -q '^tern_cluster_peers 2' && break
		sleep 0.2
	done
	measure "clustered node r$r" $B "${pids[0]}"
	stopall
	"$T" serve --listen 127.0.0.1:$((B + 3)) --data "$W/ds" --log-level warn >"$W/single.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$((B + 3))) 2>/dev/null && break; sleep 0.1; done
	measure "single r$r" $((B + 3)) "${pids[0]}"
	stopall
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
