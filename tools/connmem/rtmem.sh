#!/usr/bin/env bash
# Where an idle subscribed connection's RSS goes: runs tools/connmem/rtmem
# (a broker in-process that prints runtime/metrics memory classes and its
# smaps resident set on SIGUSR1), takes a baseline, holds N connections
# from tern bench conn --subscribe for 20 s and prints the growth per
# connection 19 s in (after the broker's memory return, 5 s after the count
# settles). Run it at two N to tell per-connection costs from fixed ones
# (BENCHMARKS.md, "Idle connection memory, 2026-12-02 late session").
#
#   tools/connmem/rtmem.sh [N] [TERN_BINARY]     # PORT (21040), SRC_NET (175)
set -euo pipefail
n=${1:-19000}
tern=${2:-./bin/tern}
port=${PORT:-21040}
src=${SRC_NET:-175}
ulimit -n 20000
work=$(mktemp -d)
bpid=
trap 'kill $bpid 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/rtmem" ./tools/connmem/rtmem
"$work/rtmem" -listen 127.0.0.1:$port -conns "$n" >"$work/out" 2>"$work/err" &
bpid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
sleep 1
kill -USR1 $bpid
sleep 1
"$tern" bench conn --broker 127.0.0.1:$port --broker-pid $bpid --conns "$n" --connect-rate 5000 \
	--subscribe --source "127.0.$src.2-127.0.$src.9" --duration 20s --quiet --json >"$work/bench.json" &
cpid=$!
sleep 19
kill -USR1 $bpid
wait $cpid
sleep 1
cat "$work/out"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('connected', r['connect']['connected'], ' RSS growth per connection', round(r['broker']['rss_per_conn_bytes']))" "$work/bench.json"
