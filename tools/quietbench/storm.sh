#!/bin/sh
# storm: issue 13's connect storms, Tern against mosquitto in the same run —
# the one connect-storm tool (it replaced tools/connmem/storm.sh and the
# goroutine-per-client tools/connstorm).
#
# 19,000 clients connect at once, 256 in their connect phase at a time
# (`tern bench conn --connect-rate -1 --parallel 256`: one process, one
# event loop per core, raw non-blocking sockets on epoll, no goroutine per
# client), five ways: plain TCP, TLS with full handshakes, TLS resuming a
# session ticket (a fleet reconnecting), a username/password from a
# password file, and persistent sessions (clean session 0). Each variant is
# `tern bench compare` of a Tern (default configuration, plus
# --password-file for the password variant) and a mosquitto (persistence
# false, max_connections -1, password_file for the password variant), and
# with TERN_BASE a second Tern binary (A/B against a base build), ECDSA
# P-256 certificates made here with openssl. ROUNDS=2 storms twice with the
# same client ids: the second round is the fleet coming back (persistent
# sessions resumed, verified passwords remembered by Tern's cache).
# Prints one markdown table per variant: connects/s, CONNACK p50/p99/max,
# SYN retransmissions, TLS full/resumed handshakes, broker and harness CPU
# per connect with their kernel part (over loopback most of a connect is
# kernel TCP work, and which process pays for it is partly an accident of
# who sends: a write runs the receiver's TCP input too).
#
# Usage: tools/quietbench/storm.sh [OUTDIR]     (from the repository root)
# Env:   CONNS (19000), PARALLEL (256), ROUNDS (1), VARIANTS ("plain tls
#        tls-resume password persistent"), MOSQUITTO (binary path),
#        TERN (binary; default: `make build` and ./bin/tern), TERN_BASE
#        (a second Tern binary measured in the same rounds), PORT_BASE
#        (first of 9 consecutive ports; default: free ports), SRC_NET
#        (source addresses 127.0.K.2-17 with K from SRC_NET+1 per variant;
#        default 0), TLS_CURVES (X25519: what mosquitto's OpenSSL
#        negotiates; Go would otherwise offer X25519MLKEM768 first, which
#        Tern accepts and which costs it ≈ 50 % more per handshake —
#        compare like with like).
# Needs `ulimit -n` above CONNS + 100 (the harness holds every client).
set -eu
out=${1:-/tmp/storm}
conns=${CONNS:-19000}
par=${PARALLEL:-256}
rounds=${ROUNDS:-1}
variants=${VARIANTS:-plain tls tls-resume password persistent}
mosq=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
curves=${TLS_CURVES:-X25519}
rm -rf "$out"
mkdir -p "$out/pki"
chmod 755 "$out" "$out/pki" # mosquitto run as root reads them as its own user

tern=${TERN:-}
base=${TERN_BASE:-}
srcnet=${SRC_NET:-0}
nport=0
freeport() {
	if [ -n "${PORT_BASE:-}" ]; then
		echo $((PORT_BASE + nport))
		nport=$((nport + 1))
		return
	fi
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# PKI: a CA and a server certificate for 127.0.0.1, ECDSA P-256.
(
	cd "$out/pki"
	openssl ecparam -name prime256v1 -genkey -noout -out ca.key
	openssl req -x509 -new -key ca.key -subj /CN=storm-ca -days 30 -out ca.pem
	openssl ecparam -name prime256v1 -genkey -noout -out server.key
	openssl req -new -key server.key -subj /CN=127.0.0.1 -out server.csr
	printf 'subjectAltName=IP:127.0.0.1\n' >ext.cnf
	openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile ext.cnf -out server.pem
	chmod 644 ./*
) >/dev/null 2>&1

if [ -z "$tern" ]; then
	make build >/dev/null
	tern=./bin/tern
fi
printf '%s\n' storm-secret | $tern passwd -f "$out/tern-passwords" storm >/dev/null
mosquitto_passwd -c -b "$out/mosq-passwords" storm storm-secret
chmod 644 "$out/mosq-passwords"

# (freeport is called in this shell, not in $(...), so PORT_BASE counts up)
for v in tp tt ta mp mt ma bp bt ba; do
	freeport >"$out/port"
	eval "$v=$(cat "$out/port")"
done
cat >"$out/mosq.conf" <<CONF
per_listener_settings false
allow_anonymous true
max_connections -1
persistence false
log_dest none
listener $mp 127.0.0.1
listener $mt 127.0.0.1
cafile $out/pki/ca.pem
certfile $out/pki/server.pem
keyfile $out/pki/server.key
CONF
cat >"$out/mosq-auth.conf" <<CONF
allow_anonymous false
password_file $out/mosq-passwords
max_connections -1
persistence false
log_dest none
listener $ma 127.0.0.1
CONF
"$mosq" -c "$out/mosq.conf" >"$out/mosq.log" 2>&1 &
mpid=$!
"$mosq" -c "$out/mosq-auth.conf" >"$out/mosq-auth.log" 2>&1 &
mapid=$!
# serve NAME BINARY PLAIN TLS AUTH: a Tern with a plain and a TLS listener
# (pid in $spid) and one with a password file (pid in $sapid).
serve() {
	$2 serve --listen 127.0.0.1:$3 --tls-listen 127.0.0.1:$4 --tls-cert "$out/pki/server.pem" \
		--tls-key "$out/pki/server.key" --data "$out/$1-data" --log-level error >"$out/$1.log" 2>&1 &
	spid=$!
	$2 serve --listen 127.0.0.1:$5 --password-file "$out/tern-passwords" --data "$out/$1-auth-data" \
		--log-level error >"$out/$1-auth.log" 2>&1 &
	sapid=$!
	pids="$pids $spid $sapid"
}
pids="$mpid $mapid"
serve tern "$tern" $tp $tt $ta
tpid=$spid tapid=$sapid
if [ -n "$base" ]; then
	serve base "$base" $bp $bt $ba
	bpid=$spid bapid=$sapid
fi
trap 'kill $pids 2>/dev/null; wait $pids 2>/dev/null || true' EXIT INT TERM
sleep 1

{
	echo "# storm $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?), $(go version | cut -d' ' -f3), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# $conns clients, --connect-rate -1 --parallel $par, $rounds round(s); tern $tern${base:+, base $base}"
} | tee "$out/summary.md"
k=0
for v in $variants; do
	k=$((k + 1))
	kk=$((srcnet + k))
	# A fresh range of source addresses per variant: the previous variant's
	# 19k sockets are still in TIME_WAIT.
	src="127.0.$kk.2-127.0.$kk.17"
	case $v in
	plain) tport=$tp; m=$mp; b=$bp; tpid_=$tpid; mpid_=$mpid; bpid_=${bpid:-}; extra="" ;;
	tls) tport=$tt; m=$mt; b=$bt; tpid_=$tpid; mpid_=$mpid; bpid_=${bpid:-}; extra="--tls --cafile $out/pki/ca.pem --tls-curves $curves" ;;
	tls-resume) tport=$tt; m=$mt; b=$bt; tpid_=$tpid; mpid_=$mpid; bpid_=${bpid:-}; extra="--tls --cafile $out/pki/ca.pem --tls-curves $curves --tls-resume" ;;
	password) tport=$ta; m=$ma; b=$ba; tpid_=$tapid; mpid_=$mapid; bpid_=${bapid:-}; extra="--username storm --password storm-secret" ;;
	persistent) tport=$tp; m=$mp; b=$bp; tpid_=$tpid; mpid_=$mpid; bpid_=${bpid:-}; extra="--persistent --client-prefix storm-$$-" ;;
	*) echo "unknown variant $v" >&2; exit 2 ;;
	esac
	echo "## $v" | tee -a "$out/summary.md"
	# shellcheck disable=SC2086
	baseargs=""
	if [ -n "$base" ]; then
		baseargs="--broker tern-base=127.0.0.1:$b --broker-pid tern-base=$bpid_"
	fi
	$tern bench compare --rounds "$rounds" --pause 2s --broker tern=127.0.0.1:$tport --broker-pid tern=$tpid_ $baseargs \
		--broker mosquitto=127.0.0.1:$m --broker-pid mosquitto=$mpid_ --markdown "$out/$v.md" --json \
		-- conn --conns "$conns" --connect-rate -1 --parallel "$par" --duration 1s --connect-timeout 30s \
		--source "$src" --quiet $extra >"$out/$v.json" 2>"$out/$v.log" || cat "$out/$v.log"
	tee -a "$out/summary.md" <"$out/$v.md"
	echo | tee -a "$out/summary.md"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/summary.md"
