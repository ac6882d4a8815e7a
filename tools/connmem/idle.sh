#!/usr/bin/env bash
# Idle memory per subscribed plain-TCP connection, Tern against mosquitto in
# the same run: 19,000 connections (3.1.1, clean session), each subscribed
# to its own topic, held 3 s; RSS growth per connection from tern bench
# conn --json (rss_per_conn_bytes). A fresh broker per round, rounds
# alternate. About 25 s per round.
#
#   tools/connmem/idle.sh [ROUNDS] [TERN_BINARY] [BASELINE_TERN_BINARY]
#
# With a baseline binary (e.g. main's), it is measured in each round too.
# Needs mosquitto on PATH and a per-process descriptor limit of 20,000.
set -euo pipefail
rounds=${1:-2}
tern=${2:-./bin/tern}
base=${3:-}
conns=${CONNS:-19000}
ulimit -n 20000
work=$(mktemp -d)
trap 'kill $bpid 2>/dev/null || true; rm -rf "$work"' EXIT
bpid=
port=$((20000 + RANDOM % 20000))

waitport() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done; echo "broker did not listen on $port" >&2; exit 1; }

measure() { # name
	"$tern" bench conn --broker 127.0.0.1:$port --broker-pid "$bpid" --conns "$conns" --connect-rate 5000 \
		--subscribe --source 127.0.0.2-127.0.0.5 --duration 3s --quiet --json >"$work/out.json"
	python3 - "$1" "$work/out.json" <<'PY'
import json,sys
r=json.load(open(sys.argv[2]))
b=r.get("broker") or {}
print("%-17s connected %d  broker RSS %.1f MiB  per connection %d B" % (sys.argv[1], r["connect"]["connected"], b.get("rss_bytes",0)/2**20, round(b.get("rss_per_conn_bytes",0))))
PY
	kill "$bpid"; wait "$bpid" 2>/dev/null || true; bpid=
}

for _ in $(seq "$rounds"); do
	# A fresh port per broker: the last run's connections linger in TIME_WAIT.
	for bin in "$tern" $base; do
		port=$((port + 1))
		rm -rf "$work/data"
		"$bin" serve --listen 127.0.0.1:$port --data "$work/data" --log-level warn >/dev/null 2>&1 &
		bpid=$!; waitport
		measure "tern$([ "$bin" = "$tern" ] || echo ' (baseline)')"
	done
	port=$((port + 1))
	printf 'listener %d 127.0.0.1\n\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_type none\n' $port >"$work/mosq.conf"
	mosquitto -c "$work/mosq.conf" >/dev/null 2>&1 &
	bpid=$!; waitport
	measure mosquitto
done
