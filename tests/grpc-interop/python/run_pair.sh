#!/usr/bin/env bash
# Starts an interop server on a free port, runs an interop client against it, stops the server.
#
#   run_pair.sh [CLIENT_ARGS...]          e.g. run_pair.sh --test_case all
#
# By default both peers are the Python ones next to this script. Either can be swapped for
# another implementation taking the standard flags:
#   SERVER="cmd --with args"   started as: $SERVER --port 0  (must print "listening on PORT")
#   CLIENT="cmd --with args"   run as:     $CLIENT --server_host 127.0.0.1 --server_port PORT ...
#   PYTHON=/path/to/python     interpreter for the Python peers (default: the repo's .venv
#                              if it exists, else python3; it needs scripts/requirements-test.txt)
# Exits with the client's status.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
server="${SERVER:-$python $here/interop_server.py}"
client="${CLIENT:-$python $here/interop_client.py}"
[ "$#" -gt 0 ] || set -- --test_case all

out="$(mktemp)"
# shellcheck disable=SC2086 # word splitting of $server is intended
$server --port 0 >"$out" &
server_pid=$!
trap 'kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; rm -f "$out"' EXIT

port=""
for _ in $(seq 1 300); do
  port="$(sed -n 's/^listening on \([0-9][0-9]*\)$/\1/p' "$out")"
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "server exited before listening" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "server did not print 'listening on PORT' within 30 s" >&2; exit 1; }

status=0
# shellcheck disable=SC2086
$client --server_host 127.0.0.1 --server_port "$port" "$@" || status=$?
exit "$status"
