#!/usr/bin/env bash
# The one command that runs chit on this machine: makes sure RabbitMQ and
# PostgreSQL are up (deploy/local/ensure-services.sh), builds the release
# binary, links it as `chit` into cargo's bin directory (deploy/local/link-chit.sh)
# and runs `chit dev`, which applies the topology, runs a receipts sink
# on SQLite and a command.execute worker, and prints commands to try.
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
exec "${CARGO_TARGET_DIR:-target}/release/chit" dev "$@"
