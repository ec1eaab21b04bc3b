#!/bin/sh
# Reproduces the forwarding numbers in docs/forward.md: starts Debian's
# prometheus (remote-write receiver), victoria-metrics and mosquitto, and the
# Kafka-protocol broker tansu ($PERCH_TANSU, default `tansu` on PATH; built
# by scripts/test into ~/.cache/perch/tools) on loopback in a temporary directory,
# runs `perch bench forward` against them and stops them again.
#   scripts/bench-forward.sh [path/to/perch] [extra bench args]
set -eu
PERCH=${1:-target/release/perch}
[ $# -gt 0 ] && shift
DIR=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$DIR"; }
trap cleanup EXIT INT TERM
printf 'global:\n  scrape_interval: 1h\n' > "$DIR/prom.yml"
prometheus --config.file="$DIR/prom.yml" --storage.tsdb.path="$DIR/prom" \
  --web.listen-address=127.0.0.1:19090 --web.enable-remote-write-receiver >"$DIR/prom.log" 2>&1 &
PIDS="$PIDS $!"
victoria-metrics -storageDataPath="$DIR/vm" -httpListenAddr=127.0.0.1:18428 >"$DIR/vm.log" 2>&1 &
PIDS="$PIDS $!"
printf 'listener 11883 127.0.0.1\nallow_anonymous true\n' > "$DIR/mosquitto.conf"
mosquitto -c "$DIR/mosquitto.conf" >"$DIR/mosquitto.log" 2>&1 &
PIDS="$PIDS $!"
"${PERCH_TANSU:-tansu}" broker --listener-url=tcp://127.0.0.1:19092 \
  --advertised-listener-url=tcp://127.0.0.1:19092 --storage-engine=memory://tansu/ >"$DIR/tansu.log" 2>&1 &
PIDS="$PIDS $!"
sleep 3
"$PERCH" bench forward \
  --remote-write http://127.0.0.1:19090/api/v1/write \
  --remote-write http://127.0.0.1:18428/api/v1/write \
  --mqtt mqtt://127.0.0.1:11883 \
  --kafka 127.0.0.1:19092 "$@"
