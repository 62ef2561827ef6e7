"""Dramatiq baseline for chit's benchmarks: a no-op actor through RabbitMQ.

Configured from the environment by bench/dramatiq/run.sh:
  DRAMATIQ_BENCH_BROKER  amqp://... (a vhost of the bench's own)
  DRAMATIQ_BENCH_DIR     a directory for the workers' completion counts

The broker is Dramatiq's RabbitmqBroker with publisher confirms
(confirm_delivery=True); everything else is Dramatiq's default: a durable
classic queue, persistent messages, default middleware, ack after the actor
returned, prefetch 2 per thread, no result store.

Completions are counted at the worker: the actor adds one to its process's
count and notes the time; a thread in each worker process writes
"count first last" to DIR/done.PID every 10 ms. The clock stops at the
latest "last" of all processes, not at the moment it was read.

`python tasks.py bench N M PROCESSES THREADS` publishes N messages, the
first M of them one by one with confirms (the publish rate), then starts
`dramatiq tasks --processes P --threads T` on the prefilled queue, waits
until the workers counted N, checks that the queue is empty and that no task
ran twice, stops the workers and prints one JSON line. Besides the rates:
rss_mb, the peak RSS (VmHWM) summed over the worker's process tree (shared
pages of the forked processes count in each), and cpu_us_per_task, the
tree's CPU time (utime + stime) per task from the first completion seen on,
so without Python's start-up.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

QUEUE = "default"


class _Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.first = None
        self.last = None


_counts = _Counts()


class CountWriter(Middleware):
    """In each worker process: writes the process's count to a file."""

    def after_worker_boot(self, broker, worker):
        out = pathlib.Path(os.environ["DRAMATIQ_BENCH_DIR"])
        path = out / f"done.{os.getpid()}"
        tmp = out / f".done.{os.getpid()}"

        def loop():
            written = None
            while True:
                with _counts.lock:
                    now = (_counts.count, _counts.first, _counts.last)
                if now != written:
                    tmp.write_text(f"{now[0]} {now[1] or 0} {now[2] or 0}\n")
                    tmp.replace(path)  # whole lines only, for the reader
                    written = now
                time.sleep(0.01)

        threading.Thread(target=loop, name="bench-counts", daemon=True).start()


broker = RabbitmqBroker(url=os.environ["DRAMATIQ_BENCH_BROKER"], confirm_delivery=True)
broker.add_middleware(CountWriter())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", queue_name=QUEUE, max_retries=0)
def noop():
    now = time.time()
    with _counts.lock:
        _counts.count += 1
        if _counts.first is None:
            _counts.first = now
        _counts.last = now


def read_counts(out):
    """(count, first completion, last completion) over every worker process."""
    total, first, last = 0, None, None
    for f in out.glob("done.*"):
        try:
            n, a, b = f.read_text().split()
        except (OSError, ValueError):
            continue
        total += int(n)
        if int(n):
            first = float(a) if first is None else min(first, float(a))
            last = float(b) if last is None else max(last, float(b))
    return total, first, last


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(p.name))
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children.get(p, []))
    return pids


def cpu_secs(pids):
    """utime + stime of these processes, in seconds."""
    ticks = 0
    for pid in pids:
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        f = stat.rsplit(")", 1)[1].split()
        ticks += int(f[11]) + int(f[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def status_kb(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def queue_depth():
    """Messages ready in the queue (a passive declare, on a connection of its
    own). With no worker running, unacked ones are ready again, so this is
    all that is left."""
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["DRAMATIQ_BENCH_BROKER"]))
    try:
        return conn.channel().queue_declare(QUEUE, passive=True).method.message_count
    finally:
        conn.close()


def bench(n, timed, processes, threads, timeout):
    out = pathlib.Path(os.environ["DRAMATIQ_BENCH_DIR"])

    # The publish rate: `timed` sends one after the other, each waiting for
    # its confirm, as Dramatiq sends with confirm_delivery=True.
    timed = max(1, min(timed, n - 1))
    noop.send()  # declares the queues; not timed, counted in n
    start = time.perf_counter()
    for _ in range(timed):
        noop.send()
    publish_rate = timed / (time.perf_counter() - start)
    print(f"published {timed} messages with confirms: {publish_rate:.0f}/s", file=sys.stderr, flush=True)
    broker.close()
    # The rest of the prefill without confirms (at one confirm per publish it
    # would take minutes), then the queue is checked to hold all n.
    fast = RabbitmqBroker(url=os.environ["DRAMATIQ_BENCH_BROKER"], confirm_delivery=False)
    for _ in range(n - 1 - timed):
        fast.enqueue(noop.message())
    fast.close()
    deadline = time.time() + 30
    while (ready := queue_depth()) != n:
        if time.time() > deadline:
            sys.exit(f"the queue holds {ready} messages, not {n}")
        time.sleep(0.2)

    log = open(out / "worker.log", "w")
    t0 = time.time()
    worker = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dramatiq"), "tasks",
         "--processes", str(processes), "--threads", str(threads)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    (out / "worker.pid").write_text(str(worker.pid))
    try:
        last_report = time.time()
        cpu_from = None  # (done, CPU seconds) once the workers have booted
        while True:
            done, first, last = read_counts(out)
            if done >= n:
                break
            if done and cpu_from is None:
                cpu_from = (done, cpu_secs(tree(worker.pid)))
            now = time.time()
            if worker.poll() is not None:
                sys.exit(f"the worker exited ({worker.returncode}) after {done} of {n}")
            if now - t0 > timeout:
                sys.exit(f"timed out after {timeout:.0f}s: {done} of {n} done")
            if now - last_report >= 10:
                print(f"{done}/{n} done after {now - t0:.0f}s", file=sys.stderr, flush=True)
                last_report = now
            time.sleep(0.01)
        pids = tree(worker.pid)
        rss_kb = sum(status_kb(p, "VmHWM") for p in pids)
        if cpu_from is None or cpu_from[0] >= n:
            cpu_from = (0, 0.0)  # all done before the first look: boot included
        cpu_per_task = (cpu_secs(pids) - cpu_from[1]) / (n - cpu_from[0])
        # Nothing more may run: a count above n is a task run twice.
        time.sleep(0.5)
        done, first, last = read_counts(out)
        if done != n:
            sys.exit(f"{done} completions for {n} tasks")
    finally:
        # SIGTERM to the main process only: it passes it on to its workers
        # (a second one, from a signal to the whole group, kills them).
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        (out / "worker.pid").unlink()
    left = queue_depth()
    if left:
        sys.exit(f"{left} messages left in the queue")
    secs = last - t0
    print(json.dumps({
        "dramatiq_drain_per_sec": round(n / secs, 1),
        "dramatiq_publish_per_sec": round(publish_rate, 1),
        "drain_secs": round(secs, 3),
        "startup_secs": round(first - t0, 3),
        "processes": processes,
        "threads": threads,
        "tasks": n,
        "rss_mb": round(rss_kb / 1024, 1),
        "cpu_us_per_task": round(cpu_per_task * 1e6, 1),
    }))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "bench":
        bench(*map(int, sys.argv[2:6]), float(os.environ.get("DRAMATIQ_BENCH_TIMEOUT", "240")))
    else:
        sys.exit("usage: tasks.py bench N TIMED_PUBLISHES PROCESSES THREADS")
