#!/usr/bin/env bash
# Idle memory per subscribed plain-TCP connection, Tern against mosquitto in
# the same run: 19,000 connections (3.1.1, clean session), each subscribed
# to its own topic, held HOLD (default 10 s: Tern returns the free heap to
# the OS 5 s after the connection count settles, memory_return_after); RSS
# growth per connection from tern bench conn --json (rss_per_conn_bytes),
# and for Tern the live heap after its last collection (GODEBUG=gctrace=1,
# the heap marked live; "-" when no collection ran after the storm). A
# fresh broker per round, rounds alternate. About 35 s per round.
#
#   tools/connmem/idle.sh [ROUNDS] [TERN_BINARY] [BASELINE_TERN_BINARY]
#
# With a baseline binary (e.g. main's), it is measured in each round too.
# Env: CONNS (19000), HOLD (10s), PORT (first port, default 22000 + random
# 0..899), SRC_NET (source addresses 127.0.SRC_NET+k.2-9 for the k-th
# broker run; default 150 + random 0..49), TERN_ENV (extra environment for the Tern brokers, e.g.
# GOGC=50). Needs mosquitto on PATH and a descriptor limit of 20,000.
set -euo pipefail
rounds=${1:-2}
tern=${2:-./bin/tern}
base=${3:-}
conns=${CONNS:-19000}
ulimit -n 20000
work=$(mktemp -d)
trap 'kill $bpid 2>/dev/null || true; rm -rf "$work"' EXIT
bpid=
hold=${HOLD:-10s}
src=${SRC_NET:-$((150 + RANDOM % 50))} # source addresses 127.0.SRC.2-9, SRC + 1 per broker
port=${PORT:-$((22000 + RANDOM % 900))}

waitport() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done; echo "broker did not listen on $port" >&2; exit 1; }

measure() { # name
	# Fresh source addresses per broker: the last run's clients linger in
	# TIME_WAIT and a reused range runs out of local ports.
	src=$((src + 1))
	"$tern" bench conn --broker 127.0.0.1:$port --broker-pid "$bpid" --conns "$conns" --connect-rate 5000 \
		--subscribe --source "127.0.$src.2-127.0.$src.9" --duration "$hold" --quiet --json >"$work/out.json"
	python3 - "$1" "$work/out.json" "$work/broker.err" "$conns" <<'PY'
import json,re,sys
r=json.load(open(sys.argv[2]))
b=r.get("broker") or {}
live="-"
try:
    gcs=[l for l in open(sys.argv[3]) if l.startswith("gc ")]
    if gcs:
        m=re.search(r"(\d+)->(\d+)->(\d+) MB", gcs[-1])
        live="%.1f MiB (%s)" % (int(m.group(3)), gcs[-1].split()[2])
except OSError:
    pass
print("%-17s connected %d  broker RSS %.1f MiB  per connection %d B  live heap after last GC %s" % (sys.argv[1], r["connect"]["connected"], b.get("rss_bytes",0)/2**20, round(b.get("rss_per_conn_bytes",0)), live))
PY
	kill "$bpid"; wait "$bpid" 2>/dev/null || true; bpid=
}

for _ in $(seq "$rounds"); do
	# A fresh port per broker: the last run's connections linger in TIME_WAIT.
	for bin in "$tern" $base; do
		port=$((port + 1))
		rm -rf "$work/data"
		: >"$work/broker.err"
		env GODEBUG=gctrace=1 ${TERN_ENV:-} "$bin" serve --listen 127.0.0.1:$port --data "$work/data" --log-level warn >/dev/null 2>"$work/broker.err" &
		bpid=$!; waitport
		measure "tern$([ "$bin" = "$tern" ] || echo ' (baseline)')"
	done
	port=$((port + 1))
	printf 'listener %d 127.0.0.1\n\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_type none\n' $port >"$work/mosq.conf"
	mosquitto -c "$work/mosq.conf" >/dev/null 2>&1 &
	bpid=$!; waitport
	: >"$work/broker.err"
	measure mosquitto
done
