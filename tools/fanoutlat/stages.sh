#!/bin/sh
# stages.sh: where the fan-out latency goes, stage by stage (BENCHMARKS.md
# "Fan-out p99, 2026-12-02 evening"). Builds Tern with -tags fanouttrace
# (server/fanouttrace.go), runs the fan-out 1 → 100 at 1,000 msg/s, 64 B,
# and prints, next to the harness's report, the broker's histograms of how
# long after the intended send each stage was reached: read event, routed,
# drain begun (publisher's loop L / other loop R), write returned.
#
#   tools/fanoutlat/stages.sh                 # from the repository root
#
# Environment: QOS (0), LOOPS (broker event loops, default 2), DURATION
# (8s), WARMUP (2s), PORT (25010), PIN (1: broker on CPU 1 and harness on
# CPU 0 with taskset; 0: no pinning), BIN (a trace build to use instead of
# building one).
set -eu
QOS=${QOS:-0}
LOOPS=${LOOPS:-2}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
PORT=${PORT:-25010}
PIN=${PIN:-0}
work=$(mktemp -d /tmp/fanoutstages.XXXXXX)
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
BIN=${BIN:-}
if [ -z "$BIN" ]; then
	go build -tags fanouttrace -o "$work/tern-trace" ./cmd/tern
	BIN="$work/tern-trace"
fi
bpin="" hpin=""
if [ "$PIN" = 1 ]; then bpin="taskset -c 1" hpin="taskset -c 0"; fi
# shellcheck disable=SC2086 # $bpin is a command prefix
nice -n "${NICE:-0}" $bpin "$BIN" serve --listen 127.0.0.1:"$PORT" --event-loops "$LOOPS" --data "$work/d" --log-level warn 2>"$work/broker.err" &
pid=$!
sleep 1
echo "== load $(cut -d' ' -f1-3 /proc/loadavg); QoS $QOS, $LOOPS loops, pin $PIN"
w=$(echo "$WARMUP" | tr -d s)
(sleep $((w + 1)) && kill -USR1 "$pid") & # reset at the end of the warm-up (+1 s for connecting)
# shellcheck disable=SC2086
nice -n "${NICE:-0}" $hpin "$BIN" bench run --broker 127.0.0.1:"$PORT" --broker-pid "$pid" --scenario fan-out --pubs 1 --subs 100 --qos "$QOS" \
	--rate 1000 --duration "$DURATION" --warmup "$WARMUP" --drain 2s --quiet | grep -E 'latency|send lag|throughput|broker|harness'
kill -USR1 "$pid"
sleep 0.5
grep -A14 fanouttrace "$work/broker.err" | tail -13
echo "== load after $(cut -d' ' -f1-3 /proc/loadavg)"
