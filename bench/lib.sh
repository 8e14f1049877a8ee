# Shared by the bench scripts (sourced, not run): a throwaway PKI and a
# `secured serve` on 127.0.0.1:0 whose address is read from its JSON log.
#
#   work=$(mktemp -d); bin=target/release/secured
#   make_pki                                  # $work/certs, $work/keys
#   start_server LOG [global flags...] -- [serve flags...]
#   ... "$addr" ...
#   stop_server

server_pid=

make_pki() {
  "$bin" pki init --certs-dir "$work/certs" --keys-dir "$work/keys" --ca-bits 2048 >/dev/null
  "$bin" pki issue --role device --name device-2 --certs-dir "$work/certs" --keys-dir "$work/keys" >/dev/null
}

# start_server LOG [GLOBAL...] [-- SERVE...]: starts the server in the
# background, logging JSON to LOG; sets $server_pid and $addr.
start_server() {
  local log=$1
  shift
  local global=() serve=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do global+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  serve=("$@")
  : >"$log"
  "$bin" "${global[@]}" serve --listen 127.0.0.1:0 --cert "$work/certs/server.pem" \
    --key "$work/keys/server.key" --ca "$work/certs/ca.pem" --data-dir "${data:-$work/data}" \
    --log-format json "${serve[@]}" 2>"$log" &
  server_pid=$!
  addr=
  for _ in $(seq 1 100); do
    addr=$(grep -o '"addr":"[^"]*"' "$log" | head -1 | cut -d'"' -f4) || true
    [ -n "$addr" ] && return 0
    sleep 0.1
  done
  echo "the server did not start:" >&2
  cat "$log" >&2
  exit 1
}

stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
