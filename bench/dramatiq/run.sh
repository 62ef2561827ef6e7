#!/usr/bin/env bash
# Dramatiq's throughput on this machine, the fastest Python peer chit is
# compared with in docs/benchmarks.md. Dramatiq's RabbitMQ broker with
# publisher confirms, a no-op actor, no result store:
#   - publish rate: M messages sent one after the other, each waiting for
#     its confirm (the rest of the N are sent without confirms: at one
#     confirm per message the prefill would take minutes);
#   - drain rate: with the N messages waiting in the queue, a worker
#     (`dramatiq --processes 2 --threads 8`) is started; the clock runs from
#     its start to the last completion counted by the actor itself (see
#     tasks.py), then the queue must be empty and no task counted twice.
# Progress goes to stderr; the last line on stdout is
#   {"dramatiq_drain_per_sec": X, "dramatiq_publish_per_sec": Y, "tasks": N, "rss_mb": R, ...}
# where R is the peak RSS (VmHWM) summed over the worker's process tree.
#
# Usage: bench/dramatiq/run.sh
#   DRAMATIQ_BENCH_TASKS      tasks to run (20000)
#   DRAMATIQ_BENCH_PUBLISH    of them, published with confirms and timed (5000)
#   DRAMATIQ_BENCH_PROCESSES  worker processes (2)
#   DRAMATIQ_BENCH_THREADS    threads per process (8)
#   DRAMATIQ_BENCH_TIMEOUT    seconds to wait for the drain (240)
# Needs the local RabbitMQ (deploy/local/ensure-services.sh, run first here);
# uses a vhost of its own, deleted at the end. The venv is bench/dramatiq/.venv.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tasks=${DRAMATIQ_BENCH_TASKS:-20000}
timed=${DRAMATIQ_BENCH_PUBLISH:-5000}
processes=${DRAMATIQ_BENCH_PROCESSES:-2}
threads=${DRAMATIQ_BENCH_THREADS:-8}
export DRAMATIQ_BENCH_TIMEOUT=${DRAMATIQ_BENCH_TIMEOUT:-240}
export PYTHONDONTWRITEBYTECODE=1

log() { printf 'bench/dramatiq: %s\n' "$*" >&2; }
ctl() {
    if [ "$(id -u)" -eq 0 ]; then rabbitmqctl -q "$@"; else sudo rabbitmqctl -q "$@"; fi
}

"$here/../../deploy/local/ensure-services.sh" --with-python --skip-rust >&2

venv=$here/.venv
"$here/../../deploy/local/python-venv.sh" "$here" Dramatiq

tmp=$(mktemp -d)
vhost="chit-bench-dramatiq-$(basename "$tmp")"
cleanup() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -s "$tmp/worker.log" ]; then
        log "failed ($status); the worker's log ends with:"
        tail -n 30 "$tmp/worker.log" >&2
    fi
    # tasks.py stops the worker itself; this is for when it could not.
    if [ -s "$tmp/worker.pid" ]; then
        kill -KILL -- "-$(cat "$tmp/worker.pid")" 2>/dev/null || true
    fi
    ctl delete_vhost "$vhost" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

ctl add_vhost "$vhost" >/dev/null
ctl set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
export DRAMATIQ_BENCH_BROKER="amqp://guest:guest@127.0.0.1:5672/$vhost"
export DRAMATIQ_BENCH_DIR="$tmp"

cd "$here"
log "publishing $tasks tasks with confirms, then draining them with $processes processes x $threads threads (vhost $vhost)"
"$venv/bin/python" tasks.py bench "$tasks" "$timed" "$processes" "$threads"
