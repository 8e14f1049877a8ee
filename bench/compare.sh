#!/usr/bin/env bash
# Side-by-side macro benchmark: secured against raw TCP (iperf3), OpenSSL
# TLS 1.2 AES256-SHA256 (s_client/s_server and Python ssl), TLS 1.3
# AES-256-GCM, OpenSSH aes256-cbc + hmac-sha2-256-etm, full handshakes per
# second against `openssl s_time -new`, and 10,000 sessions opened in one burst.
#
#   bench/compare.sh                       # RUNS=3 runs of everything, 1 GiB file
#   bench/compare.sh --quick               # 1 run, 256 MiB, 3 s handshakes, 1000 sessions
#   RUNS=5 bench/compare.sh --only secured,tls12-python --size 512MiB
#
# Everything stays on 127.0.0.1. The table is printed and written to
# bench/results.md. The work is done by bench/compare.py (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v openssl >/dev/null || missing+=(openssl)
[ -x "$(command -v sshd || echo /usr/sbin/sshd)" ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v iperf3 >/dev/null || missing+=(iperf3)
[ -x /usr/bin/time ] || missing+=(time)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

cargo build --release --quiet
cargo build --release --quiet --example load --features test-support

BENCH_COMMAND="bench/compare.sh${*:+ $*}${RUNS:+ (RUNS=$RUNS)}" exec python3 bench/compare.py "$@"
