#!/usr/bin/env bash
# Notice latency: WATCHERS sessions (default 100) watch for new files while
# one device uploads FILES small files (default 20) shared with everyone,
# one every 100 ms; for each notice, the time from the server's commit to
# its arrival at the watcher. Prints the median, p99 and maximum over all
# notices, ROUNDS times (default 3). Everything stays on 127.0.0.1.
#
#   bench/notices.sh
#   WATCHERS=200 FILES=50 ROUNDS=1 bench/notices.sh
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
make_pki

for round in $(seq 1 "${ROUNDS:-3}"); do
  data="$work/data-$round"
  start_server "$work/server-$round.log"
  "$load" notices --server "$addr" --certs-dir "$work/certs" --keys-dir "$work/keys" \
    --watchers "${WATCHERS:-100}" --files "${FILES:-20}"
  stop_server
  rm -rf "$data"
done
