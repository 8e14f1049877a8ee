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
. bench/lib.sh
cleanup() {
  stop_server
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
make_pki

for backend in ${BACKENDS:-aws-lc rustcrypto}; do
  start_server "$work/server-$backend.log" --crypto "$backend"

  echo "== $backend: $sampler --server $addr --rounds $rounds"
  "$sampler" --server "$addr" --ca "$work/certs/ca.pem" --cert "$work/certs/device-1.pem" \
    --key "$work/keys/device-1.key" --rounds "$rounds" --label "$backend" \
    --csv "$work/timing-$backend.csv"
  echo

  stop_server
done
