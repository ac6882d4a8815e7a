#!/bin/sh
# Idle TLS connections: RSS and broker CPU per connection, Tern
# (tls_engine: loops) then mosquitto, in one run (BENCHMARKS.md "TLS: idle
# connections and handshakes").
#
#   tools/tlsidle/compare.sh [connections] [settle]     # defaults: 15000 50s
#
# Needs openssl and mosquitto on PATH; builds tern and tlsidle into a temp
# directory. Ports 31894, 31895, 31897 on 127.0.0.1.
set -eu
N=${1:-15000}
SETTLE=${2:-50s}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$(mktemp -d)
chmod 755 "$DIR" # mosquitto (its own user) reads the certificate here
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
cd "$DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
  -out server.crt -days 30 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
chmod 644 server.key # mosquitto drops to its own user
cat > mosq.conf <<CONF
listener 31897 127.0.0.1
certfile $DIR/server.crt
keyfile $DIR/server.key
allow_anonymous true
max_connections -1
persistence false
CONF
(cd "$ROOT" && go build -o "$DIR/tern" ./cmd/tern && go build -o "$DIR/tlsidle" ./tools/tlsidle)
./tern serve --listen 127.0.0.1:31894 --tls-listen 127.0.0.1:31895 --tls-cert server.crt --tls-key server.key \
  --tls-engine loops --durability none --allow-anonymous --log-level warn --data "$DIR/data" >tern.log 2>&1 &
TP=$!
sleep 1
echo "== tern (tls_engine: loops)"
./tlsidle -addr 127.0.0.1:31895 -cafile server.crt -pid $TP -n "$N" -parallel 64 -settle "$SETTLE"
kill $TP
wait $TP 2>/dev/null || true
mosquitto -c mosq.conf >mosq.log 2>&1 &
MP=$!
sleep 1
echo "== mosquitto"
./tlsidle -addr 127.0.0.1:31897 -cafile server.crt -pid $MP -n "$N" -parallel 64 -settle "$SETTLE"
kill $MP
wait $MP 2>/dev/null || true
