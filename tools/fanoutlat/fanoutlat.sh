#!/bin/sh
# fanoutlat.sh: the fan-out latency benchmark of BENCHMARKS.md ("Fan-out
# latency"): one publisher → 100 subscribers at 1,000 msg/s = 100k
# deliveries/s, 64 B, QoS 0 and QoS 1, Tern next to nats-server's MQTT
# mode and mosquitto, in interleaved rounds (`tern bench compare`: medians,
# ratios to Tern). With a git ref as argument, Tern built from that ref is
# measured too (as tern-base), for a before/after in the same run.
#
# Run from the repository root (needs go, git, mosquitto in PATH):
#
#   tools/fanoutlat/fanoutlat.sh              # ~2 min: 3 brokers × QoS 0, 1 × 2 rounds
#   tools/fanoutlat/fanoutlat.sh fac1566      # ~2.7 min: also Tern at fac1566
#
# Environment: ROUNDS (2), DURATION (8s), WARMUP (2s), QOS ("0 1"),
# NICE (0; e.g. -10 as root on a machine shared with other work: brokers
# and harness alike), P2P (0; 1 adds p2p 20 → 20 throughput, QoS 0 at
# 200k msg/s offered and QoS 1 closed loop, Tern and tern-base only),
# PORT (first of 4 loopback ports; default random), KEEP (1: keep the
# scratch directory with logs).
set -eu

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
QOS=${QOS:-"0 1"}
NICE=${NICE:-0}
P2P=${P2P:-0}
PORT=${PORT:-$((20000 + $$ % 20000))}
BASE=${1:-}

work=$(mktemp -d /tmp/fanoutlat.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "${KEEP:-0}" = 1 ]; then echo "scratch kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

echo "== building into $work"
go build -o "$work/tern" ./cmd/tern
go build -o "$work/nats-server" github.com/nats-io/nats-server/v2 # Tern's go.mod already requires it (cluster/)
if [ -n "$BASE" ]; then
	mkdir "$work/base-src"
	git archive "$BASE" | tar -x -C "$work/base-src"
	(cd "$work/base-src" && go build -o "$work/tern-base" ./cmd/tern)
fi
command -v mosquitto >/dev/null || { echo "mosquitto not in PATH (apt-get install mosquitto)"; exit 1; }

run() { # run LOG CMD...: start a broker in the background at the chosen priority
	log=$1
	shift
	nice -n "$NICE" "$@" >"$work/$log.log" 2>&1 &
	pids="$pids $!"
}

P_TERN=$PORT P_NATS=$((PORT + 1)) P_MOSQ=$((PORT + 2)) P_BASE=$((PORT + 3))
run tern "$work/tern" serve --listen 127.0.0.1:$P_TERN --data "$work/d-tern" --log-level warn
if [ -n "$BASE" ]; then
	run tern-base "$work/tern-base" serve --listen 127.0.0.1:$P_BASE --data "$work/d-base" --log-level warn
fi
cat >"$work/nats.conf" <<CONF
server_name: fanoutlat
listen: 127.0.0.1:-1
jetstream { store_dir: "$work/js" }
mqtt { listen: 127.0.0.1:$P_NATS }
CONF
run nats "$work/nats-server" -c "$work/nats.conf"
cat >"$work/mosquitto.conf" <<CONF
listener $P_MOSQ 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
CONF
run mosquitto mosquitto -c "$work/mosquitto.conf"
sleep 2

brokers="--broker tern=127.0.0.1:$P_TERN"
[ -n "$BASE" ] && brokers="$brokers --broker tern-base=127.0.0.1:$P_BASE"
brokers="$brokers --broker nats-server=127.0.0.1:$P_NATS --broker mosquitto=127.0.0.1:$P_MOSQ"

echo "== $(go version); tern $(git rev-parse --short HEAD)${BASE:+ vs $BASE}; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
for q in $QOS; do
	# shellcheck disable=SC2086 # $brokers is a list of flags
	nice -n "$NICE" "$work/tern" bench compare --rounds "$ROUNDS" $brokers -- \
		run --scenario fan-out --pubs 1 --subs 100 --qos "$q" --rate 1000 \
		--duration "$DURATION" --warmup "$WARMUP" --drain 2s --quiet
done
if [ "$P2P" = 1 ]; then
	tb="--broker tern=127.0.0.1:$P_TERN"
	[ -n "$BASE" ] && tb="$tb --broker tern-base=127.0.0.1:$P_BASE"
	# shellcheck disable=SC2086
	nice -n "$NICE" "$work/tern" bench compare --rounds "$ROUNDS" $tb -- \
		run --scenario p2p --pubs 20 --subs 20 --qos 0 --rate 10000 --duration "$DURATION" --warmup "$WARMUP" --drain 3s --quiet
	# shellcheck disable=SC2086
	nice -n "$NICE" "$work/tern" bench compare --rounds "$ROUNDS" $tb -- \
		run --scenario p2p --pubs 20 --subs 20 --qos 1 --closed-loop --duration "$DURATION" --warmup "$WARMUP" --drain 3s --quiet
fi
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
