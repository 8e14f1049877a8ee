#!/usr/bin/env bash
# Timing of the server's RSA unwrap (proto-spec.md §5.3, §11.2), in the
# manner of tlsfuzzer's Marvin analysis: for each RSA backend of the server,
# examples/marvin.rs times the server from PREM to its ALRT for valid and
# malformed pre-masters, interleaved in random order, and prints a table of
# quantile differences with bootstrapped confidence intervals, a sign test
# and a verdict.
#
#   bench/marvin.sh                       # 2000 rounds per backend
#   ROUNDS=10000 bench/marvin.sh          # finer resolution, five times longer
#   BACKENDS=rustcrypto bench/marvin.sh
#
# Everything runs on 127.0.0.1 with a throwaway PKI in a temporary folder;
# the samples of each backend are kept there as timing-<backend>.csv while
# the script runs (KEEP=1 keeps the folder).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-2000}
cargo build --release --quiet --bin secured
cargo build --release --quiet --example marvin
bin=$PWD/target/release/secured
sampler=$PWD/target/release/examples/marvin
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

"$bin" pki init --certs-dir "$work/certs" --keys-dir "$work/keys" --ca-bits 2048 >/dev/null

for backend in ${BACKENDS:-aws-lc rustcrypto}; do
  log="$work/server-$backend.log"
  : >"$log"
  "$bin" --crypto "$backend" serve --listen 127.0.0.1:0 --cert "$work/certs/server.pem" \
    --key "$work/keys/server.key" --ca "$work/certs/ca.pem" --data-dir "$work/data" \
    --log-format json 2>"$log" &
  server_pid=$!
  addr=
  for _ in $(seq 1 100); do
    addr=$(grep -o '"addr":"[^"]*"' "$log" | head -1 | cut -d'"' -f4) || true
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "the $backend server did not start" >&2; cat "$log" >&2; exit 1; }

  echo "== $backend: $sampler --server $addr --rounds $rounds"
  "$sampler" --server "$addr" --ca "$work/certs/ca.pem" --cert "$work/certs/device-1.pem" \
    --key "$work/keys/device-1.key" --rounds "$rounds" --label "$backend" \
    --csv "$work/timing-$backend.csv"
  echo

  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
done
