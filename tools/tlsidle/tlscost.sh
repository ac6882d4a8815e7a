#!/bin/bash
# TLS and WebSocket cost, A/B against a base build and next to mosquitto
# (BENCHMARKS.md "TLS and WebSocket cost, 2026-12-02 evening"). One mode
# per run:
#
#   tools/tlsidle/tlscost.sh memory [N] [SETTLE] [ROUNDS]
#       idle subscribed connections: RSS and broker CPU per connection, the
#       Go heap figures next to them; base and new alternating, for TLS 1.3,
#       TLS 1.2 and wss:// (N 15000, SETTLE 50 seconds, ROUNDS 1)
#   tools/tlsidle/tlscost.sh throughput [RATE_PER_PUB] [ROUNDS]
#       p2p 10 -> 10, QoS 0, 64 B: Tern TLS, Tern plain, mosquitto TLS and
#       plain, interleaved (RATE 15000, ROUNDS 2): delivered/s, lost, broker
#       drops (tern_messages_dropped_total), p99, CPU per message
#   tools/tlsidle/tlscost.sh sweep [FIRST_RATE_PER_PUB]
#       the same scenario as a capacity sweep (x1.3 per step), Tern TLS
#       and plain alternating, twice
#   tools/tlsidle/tlscost.sh handshakes [N] [ROUNDS]
#       Tern TLS vs mosquitto TLS (and the base build, if TERN_BASE is
#       set), full and resumed handshakes (X25519, as mosquitto's OpenSSL
#       negotiates), interleaved rounds: broker and harness CPU per connect
#
# Env: TERN (default: built from this checkout), TERN_BASE (memory and
# handshakes modes; e.g. /tmp/tern-base), VARIANTS (memory mode: a subset of
# "tls13 tls12 wss"), MOSQUITTO (default: on PATH), PORT (first of 16 ports
# on 127.0.0.1, default 23000), OUT (work directory, default a temp one,
# kept). Needs openssl, curl, python3; ulimit -n above N + 100.
set -eu
mode=${1:?mode: memory, throughput, sweep or handshakes}
shift
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$(mktemp -d)}
PORT=${PORT:-23000}
MOSQ=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
mkdir -p "$OUT"
chmod 755 "$OUT"
# TERN and TERN_BASE may be relative to where the script was started.
[ -z "${TERN:-}" ] || TERN=$(realpath "$TERN")
[ -z "${TERN_BASE:-}" ] || TERN_BASE=$(realpath "$TERN_BASE")
cd "$OUT"
ulimit -n 20000
if [ -z "${TERN:-}" ]; then
	(cd "$ROOT" && go build -o "$OUT/tern" ./cmd/tern)
	TERN=$OUT/tern
fi
(cd "$ROOT" && go build -o "$OUT/tlsidle" ./tools/tlsidle)
[ -f server.crt ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
	-out server.crt -days 30 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
chmod 644 server.key # mosquitto drops to its own user
P_PLAIN=$PORT P_TLS=$((PORT + 1)) P_WSS=$((PORT + 2)) P_ADMIN=$((PORT + 3)) P_MTLS=$((PORT + 4)) P_MPLAIN=$((PORT + 5))
# A second Tern (the base build, handshakes mode) runs next to the first.
P_PLAIN2=$((PORT + 6)) P_TLS2=$((PORT + 7)) P_WSS2=$((PORT + 8)) P_ADMIN2=$((PORT + 9))
cat >wss.yaml <<CONF
websocket_listeners:
  - addr: 127.0.0.1:$P_WSS
    cert_file: $OUT/server.crt
    key_file: $OUT/server.key
CONF
sed "s/:$P_WSS\$/:$P_WSS2/" wss.yaml >wss2.yaml
cat >mosq.conf <<CONF
per_listener_settings false
allow_anonymous true
max_connections -1
persistence false
log_dest none
listener $P_MTLS 127.0.0.1
certfile $OUT/server.crt
keyfile $OUT/server.key
listener $P_MPLAIN 127.0.0.1
CONF

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
start_tern() { # BIN LABEL [2: on the second set of ports]; sets TP
	local plain=$P_PLAIN tls=$P_TLS admin=$P_ADMIN wss=wss.yaml
	[ "${3:-}" = 2 ] && plain=$P_PLAIN2 tls=$P_TLS2 admin=$P_ADMIN2 wss=wss2.yaml
	rm -rf "data-$2"
	"$1" serve --listen 127.0.0.1:$plain --tls-listen 127.0.0.1:$tls --tls-cert server.crt --tls-key server.key \
		--durability none --allow-anonymous --log-level warn --data "data-$2" --admin 127.0.0.1:$admin \
		--config $wss >"tern-$2.log" 2>&1 &
	TP=$!
	PIDS+=("$TP")
	sleep 1
}
start_mosq() {
	"$MOSQ" -c mosq.conf >mosq.log 2>&1 &
	MP=$!
	PIDS+=("$MP")
	sleep 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
gostats() {
	curl -s 127.0.0.1:$P_ADMIN/metrics | awk '
		/^go_memstats_heap_inuse_bytes/ {i=$2} /^go_memstats_heap_idle_bytes/ {d=$2}
		/^go_memstats_heap_released_bytes/ {r=$2} /^go_memstats_next_gc_bytes/ {g=$2}
		END {printf "heap in use %.1f MiB, idle not returned %.1f MiB, GC goal %.1f MiB\n", i/1048576, (d-r)/1048576, g/1048576}'
}
drops() { curl -s 127.0.0.1:$P_ADMIN/metrics | awk '/^tern_messages_dropped_total/ {s+=$2} END {print s+0}'; }

case $mode in
memory)
	N=${1:-15000} SETTLE=${2:-50} ROUNDS=${3:-1} # SETTLE in seconds
	for r in $(seq "$ROUNDS"); do
		for variant in ${VARIANTS:-tls13 tls12 wss}; do
			for b in base new; do
				bin=$TERN
				if [ $b = base ]; then
					[ -n "${TERN_BASE:-}" ] || continue
					bin=$TERN_BASE
				fi
				start_tern "$bin" "$b"
				case $variant in
				tls13) args=(-addr 127.0.0.1:$P_TLS) ;;
				tls12) args=(-addr 127.0.0.1:$P_TLS -tls12) ;;
				wss) args=(-addr 127.0.0.1:$P_WSS -ws /mqtt) ;;
				esac
				echo "== round $r, $variant, $b ($bin), $(uptime | sed 's/.*load/load/')"
				rm -f idle.out
				./tlsidle "${args[@]}" -cafile server.crt -pid "$TP" -n "$N" -parallel 64 -settle "${SETTLE}s" >idle.out &
				cp=$!
				until grep -q connections: idle.out 2>/dev/null; do sleep 0.5; done
				sleep 5
				echo "   5 s after the last connect: $(gostats)"
				sleep $((SETTLE > 8 ? SETTLE - 8 : 0))
				echo "   $((SETTLE > 8 ? SETTLE - 3 : 5)) s after: $(gostats)"
				wait $cp
				grep -E "connections:|broker" idle.out | sed 's/^/   /'
				stop "$TP"
			done
		done
	done
	;;
throughput)
	RATE=${1:-15000} ROUNDS=${2:-2}
	start_tern "$TERN" tp
	start_mosq
	echo "== p2p 10 -> 10, QoS 0, 64 B, ${RATE}/s per publisher, $(uptime | sed 's/.*load/load/')"
	for r in $(seq "$ROUNDS"); do
		for t in tern-tls tern-plain mosquitto-tls mosquitto-plain; do
			case $t in
			tern-tls) a=(--broker 127.0.0.1:$P_TLS --tls --cafile server.crt --broker-pid "$TP") ;;
			tern-plain) a=(--broker 127.0.0.1:$P_PLAIN --broker-pid "$TP") ;;
			mosquitto-tls) a=(--broker 127.0.0.1:$P_MTLS --tls --cafile server.crt --broker-pid "$MP") ;;
			mosquitto-plain) a=(--broker 127.0.0.1:$P_MPLAIN --broker-pid "$MP") ;;
			esac
			d0=$(drops)
			"$TERN" bench run "${a[@]}" --scenario p2p --pubs 10 --subs 10 --qos 0 --rate "$RATE" --duration 6s \
				--warmup 2s --drain 3s --json --quiet >"tp-$t-$r.json"
			d1=$(drops)
			case $t in tern-*) dd=$((d1 - d0)) ;; *) dd=n/a ;; esac
			python3 - "tp-$t-$r.json" "$t" "$r" "$dd" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); b = d['broker']; h = d['harness']
print(f"{sys.argv[2]:16s} round {sys.argv[3]}: delivered {d['recv_rate_per_s']:>8.0f}/s of {d['send_rate_per_s']:>8.0f}/s sent, "
      f"lost {d['lost']}, broker drops {sys.argv[4]}, p99 {d['latency']['p99_us']/1000:.1f} ms, "
      f"broker {b['cpu_per_msg_us']:.2f} µs/msg ({b['cpu_percent']:.0f} %), harness {h['cpu_per_msg_us']:.2f} µs/msg")
PY
		done
	done
	;;
sweep)
	RATE=${1:-20000}
	start_tern "$TERN" sweep
	for t in tls plain tls plain; do
		a=(--broker 127.0.0.1:$P_PLAIN)
		[ $t = tls ] && a=(--broker 127.0.0.1:$P_TLS --tls --cafile server.crt)
		d0=$(drops)
		echo "== Tern $t, $(uptime | sed 's/.*load/load/')"
		"$TERN" bench sweep "${a[@]}" --broker-pid "$TP" --scenario p2p --pubs 10 --subs 10 --qos 0 --rate "$RATE" \
			--factor 1.3 --duration 4s --warmup 1s --drain 3s --max-p99 2s --max-steps 6 --quiet
		echo "broker drops during the sweep: $(($(drops) - d0))"
	done
	;;
handshakes)
	N=${1:-3000} ROUNDS=${2:-2}
	base=()
	if [ -n "${TERN_BASE:-}" ]; then
		start_tern "$TERN_BASE" hs-base 2
		base=(--broker base=127.0.0.1:$P_TLS2 --broker-pid base="$TP")
	fi
	start_tern "$TERN" hs
	start_mosq
	for v in full resumed; do
		x=()
		[ $v = resumed ] && x=(--tls-resume)
		echo "== $v handshakes, $(uptime | sed 's/.*load/load/')"
		"$TERN" bench compare --rounds "$ROUNDS" --broker tern=127.0.0.1:$P_TLS "${base[@]}" --broker mosquitto=127.0.0.1:$P_MTLS \
			--broker-pid tern="$TP" --broker-pid mosquitto="$MP" -- conn --conns "$N" --connect-rate -1 --parallel 64 \
			--duration 1s --connect-timeout 30s --tls --cafile server.crt --tls-curves X25519 "${x[@]}" --quiet
	done
	;;
*)
	echo "unknown mode $mode" >&2
	exit 2
	;;
esac
echo "(work directory: $OUT)"
