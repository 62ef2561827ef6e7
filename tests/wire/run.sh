#!/usr/bin/env bash
# Tests chit from outside, over the wire only: a Python client (pika) publishes
# tasks, reads receipts and dead letters, and sends a cancel request, as a
# client written in another language would. See docs/protocol.md.
#
# It makes a virtualenv in tests/wire/.venv, a vhost of its own on the local
# RabbitMQ (deleted at exit), applies the topology, starts one worker (for
# command.execute and noop) and one receipts sink (SQLite in a temporary
# directory, HTTP API on a free local port), and runs test_wire.py with unittest.
#
# Arguments, if any, go to unittest: `run.sh test_wire.WireTest.test_i_...` runs
# one test.
#
# Environment:
#   CHIT_BIN          the chit binary (default target/debug/chit, built if missing)
#   CHIT_TEST_BROKER  host:port of RabbitMQ (default 127.0.0.1:5672, user guest)
#   PYTHON            the Python that makes the virtualenv (default python3)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ -n "${CHIT_BIN:-}" ] && [ "${CHIT_BIN#/}" = "$CHIT_BIN" ]; then
    CHIT_BIN="$PWD/$CHIT_BIN"
fi
CHIT_BIN="${CHIT_BIN:-$root/target/debug/chit}"
cd "$root"

if [ ! -x "$CHIT_BIN" ]; then
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
        export PATH="${HOME:-/root}/.cargo/bin:$PATH"
    fi
    echo "run.sh: $CHIT_BIN is missing; building it" >&2
    cargo build -p chit
fi

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"

vhost="chit-wire-$$-$RANDOM"
url="amqp://guest:guest@${CHIT_TEST_BROKER:-127.0.0.1:5672}/$vhost"
work="$(mktemp -d -t chit-wire.XXXXXX)"
worker_pid=""
sink_pid=""

# Stops a process this script started: SIGTERM, then SIGKILL after 10 s.
stop() {
    local pid="$1"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        # The worker drains (at most --drain-timeout), the sink commits; then it is killed.
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

cleanup() {
    status=$?
    trap - EXIT INT TERM
    stop "$worker_pid"
    stop "$sink_pid"
    if [ "$status" -ne 0 ]; then
        for name in worker sink; do
            if [ -s "$work/$name.log" ]; then
                echo "--- last lines of the $name's log ($work/$name.log) ---" >&2
                tail -n 40 "$work/$name.log" >&2
            fi
        done
    fi
    rabbitmqctl delete_vhost "$vhost" >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rabbitmqctl add_vhost "$vhost" >/dev/null
rabbitmqctl set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null

"$CHIT_BIN" topology apply --amqp-url "$url" --capability command.execute --capability noop

CHIT_LOG="${CHIT_LOG:-info}" "$CHIT_BIN" worker --amqp-url "$url" \
    --capability command.execute --capability noop --worker-id wire-test --drain-timeout 5 \
    >"$work/worker.log" 2>&1 &
worker_pid=$!

sink_port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
CHIT_LOG="${CHIT_LOG:-info}" "$CHIT_BIN" sink --amqp-url "$url" \
    --store "sqlite://$work/receipts.db" --http "127.0.0.1:$sink_port" \
    >"$work/sink.log" 2>&1 &
sink_pid=$!

mkdir -p "$work/out"
cd "$here"
# shellcheck disable=SC1091
. "$venv/bin/activate"
export CHIT_WIRE_AMQP_URL="$url" CHIT_WIRE_OUT="$work/out" CHIT_WIRE_WORKER_PID="$worker_pid"
export CHIT_WIRE_SINK_URL="http://127.0.0.1:$sink_port" CHIT_WIRE_SINK_PID="$sink_pid"
export PYTHONDONTWRITEBYTECODE=1
python -m unittest -v "$@"
