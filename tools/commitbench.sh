#!/usr/bin/env bash
# commitbench: durable QoS 1 to persistent sessions, 16 -> 16, 64 B, with
# durability sync against durability none (and, with TERN_BASE, sync on
# another build), in about 2.5 minutes:
#
#   closed loop (publishers send whenever their window of 64 has room): capacity
#   open loop at 500 and 1,000 msg/s per publisher (8,000 and 16,000 msg/s):
#     latency when the broker is not saturated, where p99 measures the commit
#     path rather than queueing
#
# and, for each sync broker, fsyncs per second and messages per fsync over
# the whole run (from /metrics).
#
# Usage (from the repository root, after `make build`):
#
#   tools/commitbench.sh                                 # bin/tern, sync vs none
#   TERN_BASE=/tmp/tern-main tools/commitbench.sh        # + sync on another build
#   ROUNDS=3 DURATION=10s tools/commitbench.sh           # longer (default 2 rounds of 6s)
#
# Ports PORT_BASE..PORT_BASE+5 on 127.0.0.1 (default 28810); data in a
# temporary directory removed at exit. EXTRA_SYNC_FLAGS go to the
# "sync" broker only (e.g. "--max-inflight-groups 1").
set -euo pipefail

TERN=${TERN:-bin/tern}
TERN_BASE=${TERN_BASE:-}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-6s}
WARMUP=${WARMUP:-1s}
RATES=${RATES:-500 1000}
PORT_BASE=${PORT_BASE:-28810}
EXTRA_SYNC_FLAGS=${EXTRA_SYNC_FLAGS:-}
P=$PORT_BASE

work=$(mktemp -d /tmp/commitbench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# start NAME BINARY PORT ADMINPORT [flags...]
start() {
	local name=$1 bin=$2 port=$3 admin=$4
	shift 4
	"$bin" serve --listen 127.0.0.1:"$port" --admin 127.0.0.1:"$admin" --data "$work/$name" \
		--log-level warn "$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
}

# shellcheck disable=SC2086 # EXTRA_SYNC_FLAGS is a list of flags
start sync "$TERN" $P $((P + 1)) $EXTRA_SYNC_FLAGS
start none "$TERN" $((P + 2)) $((P + 3)) --durability none
brokers=(--broker sync=127.0.0.1:$P --broker none=127.0.0.1:$((P + 2)))
admins=(sync=$((P + 1)))
if [[ -n $TERN_BASE ]]; then
	start sync-base "$TERN_BASE" $((P + 4)) $((P + 5))
	brokers+=(--broker sync-base=127.0.0.1:$((P + 4)))
	admins+=(sync-base=$((P + 5)))
fi
sleep 1

# scrape NAME=PORT: prints "received syncs" of that broker's /metrics.
scrape() {
	curl -s "http://127.0.0.1:${1#*=}/metrics" |
		awk '$1=="tern_messages_received_total"{r=$2} $1=="tern_store_syncs_total"{s=$2} END{printf "%d %d\n", r, s}'
}
declare -A before
for a in "${admins[@]}"; do before[$a]=$(scrape "$a"); done
t0=$(date +%s.%N)

common=(--scenario p2p --pubs 16 --subs 16 --qos 1 --persistent --duration "$DURATION" --warmup "$WARMUP" --drain 10s --quiet)
echo "== closed loop (window 64)"
"$TERN" bench compare --rounds "$ROUNDS" "${brokers[@]}" -- run "${common[@]}" --closed-loop
for r in $RATES; do
	echo
	echo "== open loop, $r msg/s per publisher ($((r * 16)) msg/s)"
	"$TERN" bench compare --rounds "$ROUNDS" "${brokers[@]}" -- run "${common[@]}" --rate "$r"
done

t1=$(date +%s.%N)
echo
echo "== fsyncs over the whole run"
for a in "${admins[@]}"; do
	read -r r0 s0 <<<"${before[$a]}"
	read -r r1 s1 <<<"$(scrape "$a")"
	awk -v n="${a%%=*}" -v r=$((r1 - r0)) -v s=$((s1 - s0)) -v t="$(echo "$t1 - $t0" | bc)" \
		'BEGIN{printf "%-10s %d fsyncs in %.0f s: %.0f fsyncs/s, %.1f messages per fsync\n", n, s, t, s/t, (s>0 ? r/s : 0)}'
done
