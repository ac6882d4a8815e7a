#!/usr/bin/env bash
# Connect storms against Tern and mosquitto in the same run: 19,000 plain-TCP
# 3.1.1 clients, 256 dialing at a time (tools/connstorm), then all closed
# and reconnected at once (round 2: a fleet coming back after an outage).
# Three modes, a fresh broker each:
#   plain       clean sessions, anonymous
#   persistent  clean session 0 (Tern: durability sync, the session record
#               is fsynced before CONNACK; mosquitto: persistence false,
#               it never fsyncs a session before CONNACK)
#   passwd      clean sessions, one user and password per client, both
#               brokers reading the same mosquitto_passwd file ($7$, PBKDF2)
# Prints connects/s, CONNACK p50/p99 (from the dial and from the CONNECT)
# and the broker's CPU per connect. About 10–20 s per line on a quiet
# machine.
#
#   tools/connmem/storm.sh [MODES...]      (default: plain persistent passwd)
#
# Env: N (19000), PARALLEL (256), TERN (./bin/tern), STORM (./bin/connstorm).
set -euo pipefail
n=${N:-19000}
parallel=${PARALLEL:-256}
tern=${TERN:-./bin/tern}
storm=${STORM:-./bin/connstorm}
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(plain persistent passwd)
ulimit -n 20000
work=$(mktemp -d)
bpid=
trap 'if [ -n "$bpid" ]; then kill "$bpid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
src=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5

waitport() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done; echo "broker did not listen on $port" >&2; cat "$work/mosquitto.log" >&2 2>/dev/null; exit 1; }

if [[ " ${modes[*]} " == *" passwd "* ]]; then
	for i in $(seq 0 $((n - 1))); do echo "dev-$i:pw-$i"; done >"$work/passwd"
	mosquitto_passwd -U "$work/passwd"
fi

for mode in "${modes[@]}"; do
	args=(-n "$n" -parallel "$parallel" -rounds 2 -source "$src" -prefix "storm")
	targs=(--log-level warn --data "$work/data-$mode")
	mconf="allow_anonymous true"
	case $mode in
	persistent) args+=(-persistent) ;;
	passwd)
		args+=(-username 'dev-%i' -password 'pw-%i')
		targs+=(--password-file "$work/passwd")
		mconf="allow_anonymous false
password_file $work/passwd"
		;;
	esac
	for broker in tern mosquitto; do
		port=$((port + 1))
		if [ $broker = tern ]; then
			"$tern" serve --listen 127.0.0.1:$port "${targs[@]}" >/dev/null 2>&1 &
		else
			printf 'listener %d 127.0.0.1\nmax_connections -1\npersistence false\nlog_type none\n%s\n' $port "$mconf" >"$work/mosq.conf"
			mosquitto -c "$work/mosq.conf" >"$work/mosquitto.log" 2>&1 &
		fi
		bpid=$!
		waitport
		"$storm" -addr 127.0.0.1:$port -pid "$bpid" "${args[@]}" | sed "s/^/$mode $broker: /"
		kill "$bpid"
		wait "$bpid" 2>/dev/null || true
		bpid=
	done
done
