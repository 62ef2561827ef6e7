#!/usr/bin/env bash
# Celery's throughput on this machine, the baseline chit is compared with in
# docs/benchmarks.md. A Celery 5 worker (prefork, 2 processes, acks late,
# STARTED tracked, results in SQLite) runs a no-op task; N tasks are published
# as fast as possible, and the clock stops when all N are SUCCESS in the
# results database. Progress goes to stderr; the last line on stdout is
#   {"celery_tasks_per_sec": X, "tasks": N, "secs": S}
#
# Usage: bench/celery/run.sh
#   CELERY_BENCH_TASKS    tasks to run (10000)
#   CELERY_BENCH_TIMEOUT  seconds to wait for them (240); past it the line
#                         reports the rate so far with "timed_out": true, exit 2
# Needs the local RabbitMQ (deploy/local/ensure-services.sh, run first here);
# uses a vhost of its own, deleted at the end. The venv is bench/celery/.venv.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tasks=${CELERY_BENCH_TASKS:-10000}
export CELERY_BENCH_TIMEOUT=${CELERY_BENCH_TIMEOUT:-240}
export PYTHONDONTWRITEBYTECODE=1

log() { printf 'bench/celery: %s\n' "$*" >&2; }
ctl() {
    if [ "$(id -u)" -eq 0 ]; then rabbitmqctl -q "$@"; else sudo rabbitmqctl -q "$@"; fi
}

"$here/../../deploy/local/ensure-services.sh" --with-python --skip-rust >&2

venv=$here/.venv
"$here/../../deploy/local/python-venv.sh" "$here" Celery

tmp=$(mktemp -d)
vhost="chit-bench-celery-$(basename "$tmp")"
worker=""
cleanup() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -s "$tmp/worker.log" ]; then
        log "failed ($status); the worker's log ends with:"
        tail -n 30 "$tmp/worker.log" >&2
    fi
    if [ -n "$worker" ] && kill -0 "$worker" 2>/dev/null; then
        kill -TERM "$worker" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$worker" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$worker" 2>/dev/null || true
        wait "$worker" 2>/dev/null || true
    fi
    ctl delete_vhost "$vhost" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

ctl add_vhost "$vhost" >/dev/null
ctl set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
export CELERY_BENCH_BROKER="amqp://guest:guest@127.0.0.1:5672/$vhost"
export CELERY_BENCH_RESULTS="$tmp/results.db"
export CELERY_BENCH_READY="$tmp/ready"

cd "$here"
"$venv/bin/python" tasks.py init
log "starting worker (prefork, concurrency 2) on vhost $vhost"
"$venv/bin/celery" -A tasks worker --pool prefork --concurrency 2 \
    --loglevel WARNING --hostname "bench@%h" >"$tmp/worker.log" 2>&1 &
worker=$!

deadline=$((SECONDS + 60))
until [ -e "$CELERY_BENCH_READY" ]; do
    if ! kill -0 "$worker" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
        cat "$tmp/worker.log" >&2
        log "the worker did not become ready"
        exit 1
    fi
    sleep 0.2
done

log "publishing $tasks tasks"
"$venv/bin/python" tasks.py publish "$tasks"
