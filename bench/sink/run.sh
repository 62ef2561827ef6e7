#!/usr/bin/env bash
# Sink ingest throughput into SQLite and PostgreSQL.
#
# For each store: a fresh RabbitMQ vhost (and a fresh PostgreSQL database),
# N receipts pre-published in messages of 50, then the sink (release build)
# runs until all are stored. Prints one JSON line per store, also written to
# bench/out/sink.jsonl. Everything created is removed on exit.
#
#   bench/sink/run.sh [RECEIPTS]        (default 100000)
#
# Environment: BROKER (127.0.0.1:5672), PGHOST (127.0.0.1), PGUSER (postgres),
# STORES ("sqlite postgres"), and PER_MESSAGE, BATCH_SIZE, PREFETCH (unset: the sink's own default).
set -euo pipefail

cd "$(dirname "$0")/../.."
N="${1:-100000}"
BROKER="${BROKER:-127.0.0.1:5672}"
PGHOST="${PGHOST:-127.0.0.1}"
PGUSER="${PGUSER:-postgres}"
STORES="${STORES:-sqlite postgres}"
PER_MESSAGE="${PER_MESSAGE:-50}"
BATCH_SIZE="${BATCH_SIZE:-1000}"
# The sink's own default prefetch unless PREFETCH is set, so this never drifts from it.
prefetch_arg=()
[ -n "${PREFETCH:-}" ] && prefetch_arg=(--prefetch "$PREFETCH")
RUN_ID="$(date +%s)-$$"
TMP="$(mktemp -d)"
VHOSTS=()
DBS=()

cleanup() {
    for v in "${VHOSTS[@]}"; do rabbitmqctl -q delete_vhost "$v" >/dev/null 2>&1 || true; done
    for d in "${DBS[@]}"; do
        psql -h "$PGHOST" -U "$PGUSER" -d postgres -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

cargo build --release -q -p chit-bench --bin sink_ingest
BIN=target/release/sink_ingest
mkdir -p bench/out

for store in $STORES; do
    vhost="chit-bench-sink-$store-$RUN_ID"
    rabbitmqctl -q add_vhost "$vhost" >/dev/null
    VHOSTS+=("$vhost")
    rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
    case "$store" in
        sqlite) url="sqlite://$TMP/bench.db" ;;
        postgres)
            db="chit_bench_sink_${RUN_ID//-/_}"
            psql -h "$PGHOST" -U "$PGUSER" -d postgres -qc "CREATE DATABASE $db" >/dev/null
            DBS+=("$db")
            url="postgres://$PGUSER@$PGHOST:5432/$db"
            ;;
        *) echo "unknown store $store" >&2; exit 2 ;;
    esac
    "$BIN" --amqp-url "amqp://guest:guest@$BROKER/$vhost" --store "$url" --receipts "$N" \
        --per-message "$PER_MESSAGE" --batch-size "$BATCH_SIZE" "${prefetch_arg[@]}" \
        | tee -a bench/out/sink.jsonl
done
