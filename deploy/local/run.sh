#!/usr/bin/env bash
# The one command that runs chit on this machine: makes sure RabbitMQ and
# PostgreSQL are up (deploy/local/ensure-services.sh), builds the release
# binary, links it as `chit` into cargo's bin directory (deploy/local/link-chit.sh),
# starts the HTTP gateway and dashboard (`chit gateway`, on CHIT_GATEWAY_HTTP,
# 127.0.0.1:8800 by default) with an API key, and runs `chit dev`, which
# applies the topology, runs a receipts sink on SQLite and a command.execute
# worker, and prints commands to try. Both use chit's default store, so the
# gateway serves the chains the sink writes.
#
# The key is made once and kept in chit's data directory
# (local-gateway-key, readable by you only); a revoked or lost one is
# replaced on the next run.
#
# Usage: deploy/local/run.sh [ARGS for chit dev...]
set -euo pipefail

cd "$(dirname "$0")/../.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

deploy/local/ensure-services.sh
cargo build --release
deploy/local/link-chit.sh
chit="${CARGO_TARGET_DIR:-target}/release/chit"

# --- the gateway and its key ---------------------------------------------------

data_dir="${CHIT_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/chit}"
mkdir -p "$data_dir"
key_file="$data_dir/local-gateway-key"
key=""
if [ -s "$key_file" ]; then
    key=$(cat "$key_file")
    key_id=$(printf '%s' "$key" | cut -d_ -f2)
    # Still there and not revoked?
    if ! "$chit" gateway keys list --json |
        jq -e --arg id "$key_id" 'any(.[]; .key_id == $id and .revoked_at == null)' >/dev/null; then
        key=""
    fi
fi
if [ -z "$key" ]; then
    key=$("$chit" gateway keys add --name "deploy/local/run.sh" --scope '*' --scope admin 2>/dev/null)
    (umask 077 && printf '%s\n' "$key" >"$key_file")
fi

gateway_http="${CHIT_GATEWAY_HTTP:-127.0.0.1:8800}"
"$chit" gateway --http "$gateway_http" &
gateway_pid=$!
# ctrl-c reaches both through the terminal; this covers every other exit.
trap 'kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true' EXIT

gateway_url="http://${gateway_http/#:/127.0.0.1:}"
cat <<EOF

chit gateway is running at $gateway_url (dashboard: $gateway_url/)
API key (also in $key_file):

  $key

Submit a task over HTTP:

  curl -X POST $gateway_url/v1/tasks \\
    -H "Authorization: Bearer $key" \\
    -H "Content-Type: application/json" \\
    -d '{"task_type": "command.execute", "payload": {"command": "echo hello", "output_path": "/tmp/hello.json"}}'
EOF

"$chit" dev "$@"
