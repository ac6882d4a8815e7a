#!/bin/sh
# ab.sh: A/B of Tern binaries on the fan-out benchmark (and optionally
# p2p), interleaved rounds with `tern bench compare`, plus each broker's
# context switches (all threads, voluntary + involuntary) per delivered
# message, from /proc — the scheduling work the p99 depends on, which is
# steadier than the p99 itself on a loaded machine.
#
#   tools/fanoutlat/ab.sh base=/tmp/tern-base new=./tern [name=BIN@ENV=VALUE ...]
#
# A spec NAME=BIN@VAR=VALUE runs BIN with the environment variable set
# (e.g. new1=./tern@LOOPS=1 runs it with --event-loops 1: LOOPS is
# special). Environment: ROUNDS (3), DURATION (8s), WARMUP (2s), QOS (0),
# SCEN (fan-out; p2p runs 20 → 20 at 10,000 msg/s each, QoS 0, or closed
# loop with QOS=1), PORT (25100), NICE (0), PIN (1: brokers on CPU 1 and the
# harness on CPU 0).
set -eu
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
QOS=${QOS:-0}
SCEN=${SCEN:-fan-out}
PORT=${PORT:-25100}
NICE=${NICE:-0}
PIN=${PIN:-0}
work=$(mktemp -d /tmp/fanoutab.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
bpin="" hpin=""
if [ "$PIN" = 1 ]; then bpin="taskset -c 1" hpin="taskset -c 0"; fi
ctxsw() { # ctxsw PID: context switches of every thread of PID
	cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'
}
brokers="" names="" port=$PORT harness=""
for spec in "$@"; do
	name=${spec%%=*}
	rest=${spec#*=}
	bin=${rest%%@*}
	envs=""
	[ "$bin" != "$rest" ] && envs=${rest#*@}
	loops=2
	case "$envs" in LOOPS=*) loops=${envs#LOOPS=} envs="" ;; esac
	[ -z "$harness" ] && harness=$bin
	# shellcheck disable=SC2086 # $envs, $bpin: word lists
	env $envs nice -n "$NICE" $bpin "$bin" serve --listen 127.0.0.1:$port --event-loops "$loops" --data "$work/d-$name" --log-level warn >"$work/$name.log" 2>&1 &
	pids="$pids $!"
	eval "pid_$name=$!"
	brokers="$brokers --broker $name=127.0.0.1:$port"
	names="$names $name"
	port=$((port + 1))
done
sleep 1
for n in $names; do eval "c0_$n=\$(ctxsw \$pid_$n)"; done
echo "== $(go version 2>/dev/null); load $(cut -d' ' -f1-3 /proc/loadavg); $SCEN QoS $QOS, pin $PIN, nice $NICE"
if [ "$SCEN" = p2p ]; then
	extra="--pubs 20 --subs 20 --rate 10000 --drain 3s"
	[ "$QOS" != 0 ] && extra="--pubs 20 --subs 20 --closed-loop --drain 3s"
else
	extra="--pubs 1 --subs 100 --rate 1000 --drain 2s"
fi
# shellcheck disable=SC2086
nice -n "$NICE" $hpin "$harness" bench compare --rounds "$ROUNDS" $brokers -- \
	run --scenario "$SCEN" $extra --qos "$QOS" --duration "$DURATION" --warmup "$WARMUP" --quiet
for n in $names; do
	eval "c1=\$(ctxsw \$pid_$n); c0=\$c0_$n"
	echo "ctxsw $n: $((c1 - c0)) context switches over the whole run"
done
echo "== load after $(cut -d' ' -f1-3 /proc/loadavg)"
