#!/usr/bin/env bash
# Where the sink's and the worker's CPU goes at saturation: the same run as
# bench/run.sh's saturation (noop tasks published by drive, worker
# concurrency 256, sink on SQLite), with `perf record` on the sink and the
# worker. Builds the `profiling` profile (release with line tables; the first
# build takes as long as a release build). perf samples on the cpu-clock
# timer (this VM has no hardware counters) with DWARF call graphs; perf slows
# both processes, so the run's rate is lower than bench/run.sh's: read the
# shares, not the rate. Results go to bench/out/profile/ (perf data, `perf
# script` text, the summaries of bench/perf_summary.py).
#
# Usage: bench/profile.sh    (PROFILE_TASKS=50000 PROFILE_FREQ=497 PROFILE_NO_BUILD=1)
# Needs perf (Debian: apt-get install linux-perf) and the local RabbitMQ.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/subscribed.sh"
out=$here/out/profile
tasks=${PROFILE_TASKS:-50000}
freq=${PROFILE_FREQ:-497}
log() { printf 'bench/profile: %s\n' "$*" >&2; }

command -v perf >/dev/null || { log "perf is missing: apt-get install linux-perf"; exit 1; }
mkdir -p "$out"
if [ "${PROFILE_NO_BUILD:-0}" != 1 ]; then
    log "building (profiling profile)"
    (cd "$root" && cargo build --profile profiling -q -p chit -p chit-bench)
fi
bin=$root/target/profiling

v=chit-bench-profile-$$
url=amqp://guest:guest@127.0.0.1:5672/$v
db=$out/store.db
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rabbitmqctl -q delete_vhost "$v" >/dev/null 2>&1 || true
    rm -f "$db" "$db-wal" "$db-shm"
}
trap cleanup EXIT
rabbitmqctl -q add_vhost "$v" >/dev/null
rabbitmqctl -q set_permissions -p "$v" guest '.*' '.*' '.*' >/dev/null
rm -f "$db" "$db-wal" "$db-shm"

"$bin/chit" topology apply --amqp-url "$url" --capability noop >/dev/null
CHIT_LOG=warn "$bin/chit" sink --amqp-url "$url" --store "sqlite://$db" --http 127.0.0.1:0 2>"$out/sink.log" &
sink=$!; pids+=("$sink")
CHIT_LOG=warn "$bin/chit" worker --amqp-url "$url" --capability noop --concurrency 256 \
    --prefetch 512 2>"$out/worker.log" &
worker=$!; pids+=("$worker")
wait_subscribed "$v"

perfs=()
for p in sink worker; do
    pid=$sink; [ "$p" = worker ] && pid=$worker
    perf record -q -e cpu-clock -F "$freq" --call-graph dwarf,32768 -p "$pid" \
        -o "$out/$p.data" 2>"$out/perf-$p.log" &
    perfs+=($!)
done
sleep 0.5
log "saturation run, $tasks tasks, perf on the sink ($sink) and the worker ($worker)"
"$bin/drive" --amqp-url "$url" --store "$db" --tasks "$tasks" | tee "$out/drive.json" >&2
kill -INT "${perfs[@]}"
wait "${perfs[@]}" || true

for p in sink worker; do
    perf script -i "$out/$p.data" -F comm,tid,ip,sym,dso 2>/dev/null >"$out/$p.script"
    python3 "$here/perf_summary.py" "$out/$p.script" | tee "$out/$p.txt"
    echo
done
