#!/usr/bin/env bash
# Devices that make progress get in during a flood: for 10 s, a flooder opens
# connections that never complete a handshake as fast as it can (half silent
# and held open, half sending garbage), while a device starts every 0.25 s
# and pauses between the server's HELO and its PREM (a slow signature, a
# slow link). Reported: how many devices completed, for pauses of 0, 0.3 and
# 1 s, with the flood from another address and from the devices' own.
#
#   bench/flood.sh
#   PAUSES="1" SOURCES="127.0.0.1" SECONDS_EACH=20 bench/flood.sh
#
# Everything stays on loopback (the server listens on 127.0.0.1; the
# flooder may send from 127.0.0.2, which is loopback too).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
cargo build --release --quiet --example load --features test-support
bin=$PWD/target/release/secured
load=$PWD/target/release/examples/load
work=$(mktemp -d)
. bench/lib.sh
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
make_pki
seconds=${SECONDS_EACH:-10}

printf '%-11s %7s %12s %10s %10s\n' "flood from" pause "flood conns" devices completed
for source in ${SOURCES:-127.0.0.2 127.0.0.1}; do
  for pause in ${PAUSES:-0 0.3 1}; do
    start_server "$work/server.log"

    "$load" flood --server "$addr" --source "$source" --seconds "$seconds" >"$work/flood.out" &
    flood_pid=$!
    sleep 0.5 # the flood is running before the first device
    "$load" paused --server "$addr" --certs-dir "$work/certs" --keys-dir "$work/keys" \
      --pause "$pause" --every 0.25 --seconds "$(echo "$seconds - 1.5" | bc -l)" \
      >"$work/paused.out" 2>"$work/paused.err"
    wait "$flood_pid"
    stop_server

    conns=$(grep -o 'connections=[0-9]*' "$work/flood.out" | cut -d= -f2)
    attempted=$(grep -o 'attempted=[0-9]*' "$work/paused.out" | cut -d= -f2)
    completed=$(grep -o 'completed=[0-9]*' "$work/paused.out" | cut -d= -f2)
    printf '%-11s %6ss %12s %10s %6s (%s %%)\n' "$source" "$pause" "$conns" "$attempted" "$completed" \
      "$(echo "100 * $completed / $attempted" | bc)"
    if [ "$completed" != "$attempted" ]; then
      sed 's/^/    /' "$work/paused.err" | head -3
    fi
  done
done
