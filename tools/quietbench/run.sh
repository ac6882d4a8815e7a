#!/bin/sh
# quietbench: issue 10's p2p goal on a quiet machine, in about 2.5 minutes.
#
# Builds bin/tern, starts Tern (default configuration) and mosquitto
# (persistence false, max_connections -1) on free loopback ports, and runs
# `tern bench compare` for p2p 20 → 20, 64 B, closed loop (window 64), QoS 1
# and QoS 2, 3 interleaved rounds of 8 s (2 s warm-up) each. Prints both
# markdown tables (delivered msg/s, p99, lost, broker and harness CPU per
# delivered message, ratio to Tern) and leaves every report as JSON in OUTDIR.
#
# Usage: tools/quietbench/run.sh [OUTDIR]      (from the repository root)
# Env:   DURATION (8s), ROUNDS (3), TERN_ARGS (extra `tern serve` flags),
#        MOSQUITTO (path of the mosquitto binary).
set -eu
out=${1:-/tmp/quietbench}
duration=${DURATION:-8s}
rounds=${ROUNDS:-3}
mosq=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
mkdir -p "$out"
rm -rf "$out/tern-data"

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tport=$(freeport)
mport=$(freeport)

make build >/dev/null
cat >"$out/mosquitto.conf" <<CONF
listener $mport 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
log_dest none
CONF
"$mosq" -c "$out/mosquitto.conf" >"$out/mosquitto.log" 2>&1 &
mpid=$!
# shellcheck disable=SC2086
./bin/tern serve --listen 127.0.0.1:$tport --data "$out/tern-data" --log-level warn ${TERN_ARGS:-} >"$out/tern.log" 2>&1 &
tpid=$!
trap 'kill $tpid $mpid 2>/dev/null; wait $tpid $mpid 2>/dev/null || true' EXIT INT TERM
sleep 1

{
	echo "# quietbench $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?), $(go version | cut -d' ' -f3), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# mosquitto $("$mosq" -h 2>/dev/null | head -1 | sed 's/.*version //')"
} | tee "$out/summary.md"
for qos in 1 2; do
	./bin/tern bench compare --rounds "$rounds" --broker tern=127.0.0.1:$tport --broker-pid tern=$tpid \
		--broker mosquitto=127.0.0.1:$mport --broker-pid mosquitto=$mpid --markdown "$out/qos$qos.md" \
		-- run --scenario p2p --pubs 20 --subs 20 --qos $qos --closed-loop --inflight 64 \
		--duration "$duration" --warmup 2s --drain 5s --quiet --json >"$out/qos$qos.json" 2>"$out/qos$qos.log" || true
	cat "$out/qos$qos.log"
	echo
	cat "$out/qos$qos.md" | tee -a "$out/summary.md"
	echo | tee -a "$out/summary.md"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/summary.md"
