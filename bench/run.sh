#!/usr/bin/env bash
# chit's end-to-end benchmark, in one command. On the local RabbitMQ it
#   1. measures the raw AMQP ceiling in this run: one bare lapin publisher and
#      one consumer on a quorum queue (persistent, pipelined confirms, manual acks);
#   2. runs chit end to end: publish -> worker (noop executor) -> receipts stored
#      by the sink in SQLite, counting only tasks whose success receipt is
#      committed; at saturation, at a fixed 1,000 tasks/s, and across worker
#      concurrencies (for the plot); at saturation also the CPU time per task
#      of the broker, the worker, the sink and the producer (utime + stime);
#   3. drains a queue of 20,000 tasks published before the worker and the
#      sink start (timed from their start to the last stored success);
#      then the latency a caller adds by waiting for a task's end
#      (publish-and-wait against a publish alone, sequential noop tasks);
#   4. runs Celery on the same broker (bench/celery/run.sh), unless
#      BENCH_SKIP_CELERY=1, and Dramatiq (bench/dramatiq/run.sh: a drain of
#      20,000 prefilled no-op tasks, and its publish rate with confirms),
#      unless BENCH_SKIP_DRAMATIQ=1.
# Each chit run gets a vhost and a SQLite file of its own, removed afterwards.
# Broker messages per task come from the broker's own statistics (the
# management plugin, enabled here if it is not). Results go to bench/out/;
# the plot to docs/benchmarks-throughput.svg. The last line printed is JSON.
#
# Usage: bench/run.sh    (BENCH_TASKS=50000 BENCH_DRAIN_TASKS=20000 BENCH_SKIP_CELERY=1
#                         BENCH_SKIP_DRAMATIQ=1 BENCH_SWEEP="1 4 16 64 256")
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/subscribed.sh"
out=$here/out
mkdir -p "$out"
tasks=${BENCH_TASKS:-50000}
drain_tasks=${BENCH_DRAIN_TASKS:-20000}
sweep=${BENCH_SWEEP:-"1 4 16 64 256"}
log() { printf 'bench: %s\n' "$*" >&2; }

"$root/deploy/local/ensure-services.sh" --with-python >&2
log "building (release)"
(cd "$root" && cargo build --release -q -p chit -p chit-bench)
bin=$root/target/release

if ! rabbitmq-plugins -q list -e rabbitmq_management | grep -q rabbitmq_management; then
    log "enabling rabbitmq_management for the broker's message statistics"
    rabbitmq-plugins -q enable rabbitmq_management >&2
fi
for _ in $(seq 1 60); do
    curl -fs -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null && break
    sleep 1
done

# Every vhost this run makes starts with this prefix; all go at exit, so
# nothing (quorum queues, their logs) is left to slow the broker down later.
prefix=chit-bench-$$-
cleanup() {
    for v in $(rabbitmqctl -q list_vhosts 2>/dev/null | grep "^$prefix"); do
        rabbitmqctl -q delete_vhost "$v" >/dev/null 2>&1 || true
    done
    jobs -p | xargs -r kill 2>/dev/null || true
}
trap cleanup EXIT

new_vhost() {
    local v=$prefix$1-$RANDOM
    rabbitmqctl -q add_vhost "$v" >/dev/null
    rabbitmqctl -q set_permissions -p "$v" guest '.*' '.*' '.*' >/dev/null
    echo "$v"
}

published_messages() { # messages published into the vhost's exchanges, per the broker
    curl -fs -u guest:guest "http://127.0.0.1:15672/api/vhosts/$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("message_stats",{}).get("publish",0))'
}

hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# CPU time of a process, all its threads: utime + stime, fields 14 and 15 of
# /proc/PID/stat (after the command in parentheses, which may hold spaces), in
# clock ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
clk_tck=$(getconf CLK_TCK)
# The broker's CPU is that of the node's beam.smp, which serves every vhost.
broker_pid=$(rabbitmqctl -q eval 'list_to_integer(os:getpid()).' 2>/dev/null || true)
[[ "$broker_pid" =~ ^[0-9]+$ ]] && [ -e "/proc/$broker_pid/stat" ] || broker_pid=$(pgrep -o -x beam.smp)

# chit_run NAME CONCURRENCY TASKS RATE -> JSON line with the run's figures
chit_run() {
    local name=$1 conc=$2 n=$3 rate=$4
    local v; v=$(new_vhost "$name")
    local url=amqp://guest:guest@127.0.0.1:5672/$v
    local db=$out/$v.db
    "$bin/chit" topology apply --amqp-url "$url" --capability noop >/dev/null
    CHIT_LOG=warn "$bin/chit" sink --amqp-url "$url" --store "sqlite://$db" --http 127.0.0.1:0 2>"$out/$v.sink.log" &
    local sink=$!
    CHIT_LOG=warn "$bin/chit" worker --amqp-url "$url" --capability noop --concurrency "$conc" \
        --prefetch $((conc * 2 > 100 ? conc * 2 : 100)) 2>"$out/$v.worker.log" &
    local worker=$!
    # Both subscribed before the clock starts.
    wait_subscribed "$v"
    # CPU over the run: broker, worker and sink from /proc around the drive
    # (they are idle before it starts, and done when it returns); the drive
    # reports its own.
    local cpu0 cpu1
    cpu0="$(cpu_ticks "$broker_pid") $(cpu_ticks "$worker") $(cpu_ticks "$sink")"
    local result
    result=$("$bin/drive" --amqp-url "$url" --store "$db" --tasks "$n" --rate "$rate")
    cpu1="$(cpu_ticks "$broker_pid") $(cpu_ticks "$worker") $(cpu_ticks "$sink")"
    local wrss srss
    wrss=$(hwm_mb "$worker"); srss=$(hwm_mb "$sink")
    kill -TERM "$worker" "$sink"; wait "$worker" "$sink" 2>/dev/null || true
    sleep 6 # the broker's statistics are collected every 5 s
    local msgs; msgs=$(published_messages "$v")
    rabbitmqctl -q delete_vhost "$v" >/dev/null 2>&1 || true
    rm -f "$db" "$db-wal" "$db-shm"
    python3 -c '
import json,sys
r=json.loads(sys.argv[1]); r.update(name=sys.argv[2], concurrency=int(sys.argv[3]),
  worker_rss_mb=float(sys.argv[4]), sink_rss_mb=float(sys.argv[5]),
  broker_msgs_per_task=round(int(sys.argv[6])/r["tasks"], 3))
us = 1e6 / int(sys.argv[9]) / r["tasks"]  # microseconds per task of one tick
ticks = dict(zip(("broker", "worker", "sink"), (b - a for a, b in zip(
    map(int, sys.argv[7].split()), map(int, sys.argv[8].split())))), producer=r.pop("cpu_ticks"))
r.update({f"cpu_us_per_task_{k}": round(t * us, 1) for k, t in ticks.items()})
r["client_cpu_us_per_task"] = round((ticks["worker"] + ticks["sink"] + ticks["producer"]) * us, 1)
print(json.dumps(r))' "$result" "$name" "$conc" "$wrss" "$srss" "$msgs" "$cpu0" "$cpu1" "$clk_tck"
}

# chit_drain TASKS -> JSON line: TASKS noop tasks published while no worker
# runs (their queued receipts wait in the sink's queue), then a worker and a
# sink started at once; timed from their start until the last success
# receipt is committed in the store. As at saturation: concurrency 256.
chit_drain() {
    local n=$1
    local v; v=$(new_vhost drain)
    local url=amqp://guest:guest@127.0.0.1:5672/$v
    local db=$out/$v.db
    "$bin/chit" topology apply --amqp-url "$url" --capability noop >/dev/null
    local prefill; prefill=$("$bin/drive" --amqp-url "$url" --tasks "$n" --prefill)
    local t0; t0=$(date +%s%3N)
    CHIT_LOG=warn "$bin/chit" sink --amqp-url "$url" --store "sqlite://$db" --http 127.0.0.1:0 2>"$out/$v.sink.log" &
    local sink=$!
    CHIT_LOG=warn "$bin/chit" worker --amqp-url "$url" --capability noop --concurrency 256 \
        --prefetch 512 2>"$out/$v.worker.log" &
    local worker=$!
    local result
    result=$("$bin/drive" --amqp-url "$url" --store "$db" --tasks "$n" --drain-since-unix-ms "$t0")
    local cpu; cpu="$(cpu_ticks "$worker") $(cpu_ticks "$sink")"
    local wrss srss
    wrss=$(hwm_mb "$worker"); srss=$(hwm_mb "$sink")
    kill -TERM "$worker" "$sink"; wait "$worker" "$sink" 2>/dev/null || true
    rabbitmqctl -q delete_vhost "$v" >/dev/null 2>&1 || true
    rm -f "$db" "$db-wal" "$db-shm"
    python3 -c '
import json,sys
r, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
us = 1e6 / int(sys.argv[4]) / r["tasks"]
w, s = map(int, sys.argv[3].split())  # since their start: all of the drain
r.update(prefill_publish_per_sec=p["publish_per_sec"],
  prefill_cpu_us_per_task_producer=round(p["cpu_ticks"] * us, 1), worker_rss_mb=float(sys.argv[5]),
  sink_rss_mb=float(sys.argv[6]), cpu_us_per_task_worker=round(w * us, 1),
  cpu_us_per_task_sink=round(s * us, 1))
print(json.dumps(r))' "$result" "$prefill" "$cpu" "$clk_tck" "$wrss" "$srss"
}

# chit_wait -> JSON line: the latency of publish-and-wait against that of a
# publish alone, 1,000 sequential noop tasks each, one worker
# (bench/src/bin/wait_latency.rs).
chit_wait() {
    local v; v=$(new_vhost wait)
    local url=amqp://guest:guest@127.0.0.1:5672/$v
    "$bin/chit" topology apply --amqp-url "$url" --capability noop >/dev/null
    CHIT_LOG=warn "$bin/chit" worker --amqp-url "$url" --capability noop --concurrency 8 \
        2>"$out/$v.worker.log" &
    local worker=$!
    local result
    result=$("$bin/wait_latency" --amqp-url "$url" --tasks 1000)
    kill -TERM "$worker"; wait "$worker" 2>/dev/null || true
    rabbitmqctl -q delete_vhost "$v" >/dev/null 2>&1 || true
    echo "$result"
}

log "raw ceiling (quorum queue, 10 s)"
v=$(new_vhost ceiling)
ceiling=$("$bin/ceiling" --amqp-url "amqp://guest:guest@127.0.0.1:5672/$v" --seconds 10)
raw_latency=$("$bin/ceiling" --amqp-url "amqp://guest:guest@127.0.0.1:5672/$v" --seconds 10 --latency-at-rate 1000)
rabbitmqctl -q delete_vhost "$v" >/dev/null
log "ceiling: $ceiling; raw latency at 1k/s: $raw_latency"

log "chit at saturation ($tasks tasks, concurrency 256)"
saturation=$(chit_run saturation 256 "$tasks" 0)
log "$saturation"
log "chit at 1,000 tasks/s offered (10 s)"
at1k=$(chit_run rate1k 64 10000 1000)
log "$at1k"
log "chit drain ($drain_tasks tasks published first, then a worker and a sink started)"
drain=$(chit_drain "$drain_tasks")
log "$drain"
log "chit publish-and-wait latency (1,000 sequential noop tasks, one worker)"
wait_latency=$(chit_wait)
log "$wait_latency"

: >"$out/sweep.jsonl"
for c in $sweep; do
    n=$((c * 2000)); [ "$n" -gt 20000 ] && n=20000; [ "$n" -lt 2000 ] && n=2000
    log "sweep: concurrency $c ($n tasks)"
    chit_run "sweep$c" "$c" "$n" 0 | tee -a "$out/sweep.jsonl" >&2
done

celery='{}'
if [ "${BENCH_SKIP_CELERY:-0}" != 1 ]; then
    log "Celery (acks_late, track_started, SQLite results, 2 processes)"
    celery=$("$here/celery/run.sh" | tail -n 1)
    log "$celery"
fi
dramatiq='{}'
if [ "${BENCH_SKIP_DRAMATIQ:-0}" != 1 ]; then
    log "Dramatiq (20,000 prefilled no-op tasks drained by 2 processes x 8 threads)"
    dramatiq=$("$here/dramatiq/run.sh" | tail -n 1)
    log "$dramatiq"
fi

python3 "$here/plot.py" "$out/sweep.jsonl" "$root/docs/benchmarks-throughput.svg"
WAIT_LATENCY=$wait_latency python3 - "$ceiling" "$raw_latency" "$saturation" "$at1k" "$celery" "$drain" "$dramatiq" "$out/results.json" <<'PY'
import json, os, sys
wait = json.loads(os.environ.get("WAIT_LATENCY") or "{}")
ceiling, raw, sat, k1, celery, drain, dramatiq = (json.loads(a) for a in sys.argv[1:8])
ceil = ceiling["ceiling_msgs_per_sec"]
summary = {
    "tasks_per_sec": sat["tasks_per_sec"],
    "ceiling_msgs_per_sec": ceil,
    "ratio": round(sat["tasks_per_sec"] / ceil, 3),
    # At saturation the drive has no receipt tap: publish to success committed.
    "stored_p50_ms": round(sat["stored_p50_ms"], 2),
    "stored_p99_ms": round(sat["stored_p99_ms"], 2),
    "p50_ms_at_1k": round(k1["final_p50_ms"], 2),
    "p95_ms_at_1k": round(k1["final_p95_ms"], 2),
    "p99_ms_at_1k": round(k1["final_p99_ms"], 2),
    "stored_p99_ms_at_1k": round(k1["stored_p99_ms"], 2),
    "raw_p99_ms_at_1k": round(raw["raw_p99_ms"], 2),
    "wait_p50_ms": wait.get("wait_p50_ms"),
    "wait_p99_ms": wait.get("wait_p99_ms"),
    "broker_msgs_per_task": sat["broker_msgs_per_task"],
    "worker_rss_mb": sat["worker_rss_mb"],
    "sink_rss_mb": sat["sink_rss_mb"],
    "celery_tasks_per_sec": celery.get("celery_tasks_per_sec"),
    "vs_celery": round(sat["tasks_per_sec"] / celery["celery_tasks_per_sec"], 1) if celery.get("celery_tasks_per_sec") else None,
    "drain_tasks_per_sec": drain["drain_tasks_per_sec"],
    "dramatiq_drain_per_sec": dramatiq.get("dramatiq_drain_per_sec"),
    "dramatiq_publish_per_sec": dramatiq.get("dramatiq_publish_per_sec"),
    "vs_dramatiq": round(sat["tasks_per_sec"] / dramatiq["dramatiq_drain_per_sec"], 2) if dramatiq.get("dramatiq_drain_per_sec") else None,
    **{k: sat[k] for k in ("cpu_us_per_task_broker", "cpu_us_per_task_worker", "cpu_us_per_task_sink",
                           "cpu_us_per_task_producer", "client_cpu_us_per_task")},
}
json.dump({"summary": summary, "ceiling": ceiling, "raw_latency": raw, "saturation": sat, "at_1k": k1, "drain": drain,
           "celery": celery, "dramatiq": dramatiq, "wait": wait},
          open(sys.argv[8], "w"), indent=2)
print(json.dumps(summary))
PY
