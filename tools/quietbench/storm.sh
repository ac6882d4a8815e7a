#!/bin/sh
# storm: issue 13's connect storms, Tern against mosquitto in the same run.
#
# 19,000 clients connect at once, 256 in their connect phase at a time
# (`tern bench conn --connect-rate -1 --parallel 256`), five ways: plain
# TCP, TLS with full handshakes, TLS resuming a session ticket (a fleet
# reconnecting), a username/password from a password file, and persistent
# sessions (clean session 0). Each variant is `tern bench compare` of a Tern
# (default configuration, plus --password-file for the password variant)
# and a mosquitto (persistence false, max_connections -1, password_file for
# the password variant), ECDSA P-256 certificates made here with openssl.
# Prints one markdown table per variant: connects/s, CONNACK p50/p99/max,
# TLS full/resumed handshakes, broker and harness CPU per connection.
#
# Usage: tools/quietbench/storm.sh [OUTDIR]     (from the repository root)
# Env:   CONNS (19000), PARALLEL (256), ROUNDS (1), VARIANTS ("plain tls
#        tls-resume password persistent"), MOSQUITTO (binary path),
#        TLS_CURVES (X25519: what mosquitto's OpenSSL negotiates; Go would
#        otherwise offer X25519MLKEM768 first, which Tern accepts and which
#        costs it ≈ 50 % more per handshake — compare like with like).
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

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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

make build >/dev/null
printf '%s\n' storm-secret | ./bin/tern passwd -f "$out/tern-passwords" storm >/dev/null
mosquitto_passwd -c -b "$out/mosq-passwords" storm storm-secret
chmod 644 "$out/mosq-passwords"

tp=$(freeport) tt=$(freeport) ta=$(freeport) mp=$(freeport) mt=$(freeport) ma=$(freeport)
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
pids=""
"$mosq" -c "$out/mosq.conf" >"$out/mosq.log" 2>&1 &
mpid=$!
"$mosq" -c "$out/mosq-auth.conf" >"$out/mosq-auth.log" 2>&1 &
mapid=$!
./bin/tern serve --listen 127.0.0.1:$tp --tls-listen 127.0.0.1:$tt --tls-cert "$out/pki/server.pem" \
	--tls-key "$out/pki/server.key" --data "$out/tern-data" --log-level error >"$out/tern.log" 2>&1 &
tpid=$!
./bin/tern serve --listen 127.0.0.1:$ta --password-file "$out/tern-passwords" --data "$out/tern-auth-data" \
	--log-level error >"$out/tern-auth.log" 2>&1 &
tapid=$!
pids="$mpid $mapid $tpid $tapid"
trap 'kill $pids 2>/dev/null; wait $pids 2>/dev/null || true' EXIT INT TERM
sleep 1

{
	echo "# storm $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?), $(go version | cut -d' ' -f3), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# $conns clients, --connect-rate -1 --parallel $par, $rounds round(s)"
} | tee "$out/summary.md"
k=0
for v in $variants; do
	k=$((k + 1))
	# A fresh range of source addresses per variant: the previous variant's
	# 19k sockets are still in TIME_WAIT.
	src="127.0.$k.2-127.0.$k.17"
	case $v in
	plain) tern=$tp; m=$mp; tpid_=$tpid; mpid_=$mpid; extra="" ;;
	tls) tern=$tt; m=$mt; tpid_=$tpid; mpid_=$mpid; extra="--tls --cafile $out/pki/ca.pem --tls-curves $curves" ;;
	tls-resume) tern=$tt; m=$mt; tpid_=$tpid; mpid_=$mpid; extra="--tls --cafile $out/pki/ca.pem --tls-curves $curves --tls-resume" ;;
	password) tern=$ta; m=$ma; tpid_=$tapid; mpid_=$mapid; extra="--username storm --password storm-secret" ;;
	persistent) tern=$tp; m=$mp; tpid_=$tpid; mpid_=$mpid; extra="--persistent --client-prefix storm-$$-" ;;
	*) echo "unknown variant $v" >&2; exit 2 ;;
	esac
	echo "## $v" | tee -a "$out/summary.md"
	# shellcheck disable=SC2086
	./bin/tern bench compare --rounds "$rounds" --pause 2s --broker tern=127.0.0.1:$tern --broker-pid tern=$tpid_ \
		--broker mosquitto=127.0.0.1:$m --broker-pid mosquitto=$mpid_ --markdown "$out/$v.md" --json \
		-- conn --conns "$conns" --connect-rate -1 --parallel "$par" --duration 1s --connect-timeout 30s \
		--source "$src" --quiet $extra >"$out/$v.json" 2>"$out/$v.log" || cat "$out/$v.log"
	tee -a "$out/summary.md" <"$out/$v.md"
	echo | tee -a "$out/summary.md"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/summary.md"
