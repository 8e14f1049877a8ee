#!/usr/bin/env bash
# Peak memory of `secured serve`, `secured device send-file` and `secured
# device fetch` while one file streams over loopback each way (device-1
# sends it shared with device-2, device-2 downloads it, verified), for
# several file sizes: memory must stay flat.
#
#   bench/memory.sh                 # 64MiB 1GiB 4GiB
#   SIZES="1GiB" bench/memory.sh
#
# Peak RSS is the kernel's high-water mark: VmHWM of the live server process
# (read from /proc before it is stopped) and GNU time's maximum resident set
# size of the device process. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/time ]; then
  apt-get install -y -qq time >/dev/null
fi
cargo build --release --quiet
bin=$PWD/target/release/secured
work=$(mktemp -d)
. bench/lib.sh
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
make_pki
to_bytes() { numfmt --from=iec-i "${1%B}"; }

printf '%-8s %14s %14s %14s %9s %9s\n' size "send peak" "fetch peak" "server peak" "send MB/s" "fetch MB/s"
for size in ${SIZES:-64MiB 1GiB 4GiB}; do
  bytes=$(to_bytes "$size")
  src="$work/clip-$size.mp4"
  # A sparse file: no disk reads on the device side, and page cache is not RSS anyway.
  truncate -s "$bytes" "$src"
  data="$work/data-$size"
  start_server "$work/server-$size.log"

  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/device-rss" "$bin" device --server "$addr" \
    --server-name localhost --cert "$work/certs/device-1.pem" --key "$work/keys/device-1.key" \
    --ca "$work/certs/ca.pem" send-file --kind video --share device-2 --json "$src" >"$work/report.json"
  end=$(date +%s.%N)
  grep -q '"verified": true' "$work/report.json" || { echo "transfer not verified" >&2; exit 1; }

  out="$work/fetched-$size.mp4"
  fstart=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/fetch-rss" "$bin" device --server "$addr" \
    --server-name localhost --cert "$work/certs/device-2.pem" --key "$work/keys/device-2.key" \
    --ca "$work/certs/ca.pem" fetch "clip-$size.mp4" --from device-1 -o "$out" --json >"$work/fetch.json"
  fend=$(date +%s.%N)
  grep -q '"verified":true' "$work/fetch.json" || { echo "download not verified" >&2; exit 1; }
  [ "$(stat -c %s "$out")" = "$bytes" ] || { echo "download has the wrong size" >&2; exit 1; }

  server_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
  stop_server
  device_kib=$(tail -1 "$work/device-rss")
  fetch_kib=$(tail -1 "$work/fetch-rss")
  secs=$(echo "$end - $start" | bc -l)
  fsecs=$(echo "$fend - $fstart" | bc -l)
  printf '%-8s %10.1f MiB %10.1f MiB %10.1f MiB %9.0f %9.0f\n' "$size" \
    "$(echo "$device_kib/1024" | bc -l)" "$(echo "$fetch_kib/1024" | bc -l)" \
    "$(echo "$server_kib/1024" | bc -l)" \
    "$(echo "$bytes/1000000/$secs" | bc -l)" "$(echo "$bytes/1000000/$fsecs" | bc -l)"
  rm -rf "$src" "$data" "$out"
done
