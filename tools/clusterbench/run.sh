#!/usr/bin/env bash
# Cluster benchmark for a quiet machine (about 2.5 minutes): three `tern serve`
# nodes and a single broker on loopback, measured in alternating rounds.
#
#   fan-out 1 -> 100 subscribers spread over the 3 nodes (publisher on n1),
#           QoS 0, 100k deliveries/s: p50/p99 (goal p99 <= 10 ms), single for reference
#   p2p 20 -> 20 QoS 1 closed loop, publishers on n1, subscribers on n2:
#           delivered/s, cluster / single (goal >= 40 %)
#
# Usage: tools/clusterbench/run.sh [rounds]   (default 2; from the repository root)
# Needs: go, python3. Prints one line per run and a summary.
set -euo pipefail
ROUNDS=${1:-2}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
go build -o "$W/tern" ./cmd/tern
T="$W/tern"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
M1=$(port); M2=$(port); M3=$(port); MS=$(port); C1=$(port); C2=$(port); C3=$(port)
A1=$(port); A2=$(port); A3=$(port)
common=(--durability sync --log-level warn)
"$T" serve --listen 127.0.0.1:$M1 --data "$W/d1" --node n1 --cluster-listen 127.0.0.1:$C1 \
  --cluster-peers 127.0.0.1:$C2,127.0.0.1:$C3 --admin 127.0.0.1:$A1 "${common[@]}" >"$W/n1.log" 2>&1 &
"$T" serve --listen 127.0.0.1:$M2 --data "$W/d2" --node n2 --cluster-listen 127.0.0.1:$C2 \
  --cluster-peers 127.0.0.1:$C1,127.0.0.1:$C3 --admin 127.0.0.1:$A2 "${common[@]}" >"$W/n2.log" 2>&1 &
"$T" serve --listen 127.0.0.1:$M3 --data "$W/d3" --node n3 --cluster-listen 127.0.0.1:$C3 \
  --cluster-peers 127.0.0.1:$C1,127.0.0.1:$C2 --admin 127.0.0.1:$A3 "${common[@]}" >"$W/n3.log" 2>&1 &
"$T" serve --listen 127.0.0.1:$MS --data "$W/d4" "${common[@]}" >"$W/single.log" 2>&1 &
for a in $A1 $A2 $A3; do
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$a/metrics" 2>/dev/null | grep -q '^tern_cluster_peers 2' && break
    sleep 0.2
  done
done
bench() { # label, then tern bench run arguments
  local label=$1; shift
  "$T" bench run "$@" --duration 5s --warmup 1s --drain 3s --quiet --json >"$W/out.json"
  python3 - "$label" "$W/out.json" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
def find(o, key):
    if isinstance(o, dict):
        if key in o: return o[key]
        for v in o.values():
            x = find(v, key)
            if x is not None: return x
    return None
print(f"{label:28s} delivered/s {find(r,'recv_rate_per_s'):>10,.0f}  p50 {find(r,'p50_us')/1000:7.1f} ms  p99 {find(r,'p99_us')/1000:7.1f} ms  lost {find(r,'lost')}")
with open(path + ".all", "a") as f: f.write(label + "\t" + json.dumps({"rate": find(r,'recv_rate_per_s'), "p99": find(r,'p99_us')}) + "\n")
PY
}
echo "go: $(go version)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo ?)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  bench "fanout single r$r" --broker 127.0.0.1:$MS --scenario fan-out --pubs 1 --subs 100 --qos 0 --rate 1000
  bench "fanout cluster r$r" --broker 127.0.0.1:$M1,127.0.0.1:$M2,127.0.0.1:$M3 --pub-broker 127.0.0.1:$M1 \
    --scenario fan-out --pubs 1 --subs 100 --qos 0 --rate 1000
  bench "p2p-qos1 single r$r" --broker 127.0.0.1:$MS --scenario p2p --pubs 20 --subs 20 --qos 1 --closed-loop
  bench "p2p-qos1 cluster r$r" --broker 127.0.0.1:$M2 --pub-broker 127.0.0.1:$M1 --scenario p2p --pubs 20 --subs 20 --qos 1 --closed-loop
done
python3 - "$W/out.json.all" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
d = {}
for label, v in rows:
    d.setdefault(label.rsplit(" ", 1)[0], []).append(json.loads(v))
fo = d.get("fanout cluster", [])
print("fan-out cluster p99 (ms):", ", ".join(f"{x['p99']/1000:.1f}" for x in fo), "(goal <= 10)")
s, c = d.get("p2p-qos1 single", []), d.get("p2p-qos1 cluster", [])
print("p2p QoS 1 cluster/single:", ", ".join(f"{b['rate']/a['rate']*100:.0f} %" for a, b in zip(s, c)), "(goal >= 40 %)")
PY
