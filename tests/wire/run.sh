#!/usr/bin/env bash
# Tests chit from outside, over the wire only: a Python client (pika) publishes
# tasks, reads receipts and dead letters, and sends a cancel request, as a
# client written in another language would. See docs/protocol.md.
#
# It makes a virtualenv in tests/wire/.venv, a vhost of its own on the local
# RabbitMQ (deleted at exit), applies the topology, starts one worker, and runs
# test_wire.py with unittest.
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

cleanup() {
    status=$?
    trap - EXIT INT TERM
    if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
        kill -TERM "$worker_pid" 2>/dev/null || true
        # The worker drains (at most --drain-timeout); then it is killed.
        for _ in $(seq 1 100); do
            kill -0 "$worker_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$worker_pid" 2>/dev/null || true
        wait "$worker_pid" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ] && [ -s "$work/worker.log" ]; then
        echo "--- last lines of the worker's log ($work/worker.log) ---" >&2
        tail -n 40 "$work/worker.log" >&2
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

"$CHIT_BIN" topology apply --amqp-url "$url" --capability command.execute

CHIT_LOG="${CHIT_LOG:-info}" "$CHIT_BIN" worker --amqp-url "$url" \
    --capability command.execute --worker-id wire-test --drain-timeout 5 \
    >"$work/worker.log" 2>&1 &
worker_pid=$!

mkdir -p "$work/out"
cd "$here"
# shellcheck disable=SC1091
. "$venv/bin/activate"
export CHIT_WIRE_AMQP_URL="$url" CHIT_WIRE_OUT="$work/out" CHIT_WIRE_WORKER_PID="$worker_pid"
export PYTHONDONTWRITEBYTECODE=1
python -m unittest -v
