"""Celery baseline for chit's benchmarks: a no-op task through RabbitMQ.

Configured from the environment by bench/celery/run.sh:
  CELERY_BENCH_BROKER   amqp://... (a vhost of the bench's own)
  CELERY_BENCH_RESULTS  path of the SQLite results database
  CELERY_BENCH_READY    a file the worker creates once it consumes

The settings are Celery's defaults (durable queue, persistent messages,
prefetch multiplier 4) plus what makes it comparable with chit: ack after the
task ran (task_acks_late), a STARTED state (task_track_started) and every
result stored in a queryable database.

`python tasks.py init` creates the results tables; `python tasks.py publish N`
publishes N tasks as fast as it can, waits until
the backend holds N results in state SUCCESS, and prints one JSON line.
"""

import json
import os
import pathlib
import sqlite3
import sys
import time

from celery import Celery
from celery.signals import worker_ready

app = Celery(
    "chit_bench",
    broker=os.environ["CELERY_BENCH_BROKER"],
    backend="db+sqlite:///" + os.environ["CELERY_BENCH_RESULTS"],
)
app.conf.update(
    task_acks_late=True,
    task_track_started=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


# Named explicitly: `python tasks.py` runs this module as __main__.
@app.task(name="bench.noop")
def noop():
    return None


@worker_ready.connect
def _ready(**_):
    pathlib.Path(os.environ["CELERY_BENCH_READY"]).touch()


def count_states(db):
    """(successes, failures) in the results table; (0, 0) before it exists."""
    try:
        conn = sqlite3.connect(db, timeout=1)
        try:
            rows = dict(
                conn.execute(
                    "select status, count(*) from celery_taskmeta group by status"
                ).fetchall()
            )
        finally:
            conn.close()
    except sqlite3.OperationalError:  # no table yet, or locked for a moment
        return None
    return rows.get("SUCCESS", 0), rows.get("FAILURE", 0)


def publish_and_wait(n, timeout):
    db = os.environ["CELERY_BENCH_RESULTS"]
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            noop.apply_async(producer=producer)
    published = time.perf_counter() - start
    print(f"published {n} tasks in {published:.2f}s", file=sys.stderr, flush=True)

    done, last_report = 0, start
    while True:
        states = count_states(db)
        now = time.perf_counter()
        if states is not None:
            done, failed = states
            if failed:
                sys.exit(f"{failed} tasks failed")
            if done >= n:
                break
        if now - start > timeout:
            # Keep the run bounded: report the rate so far, and fail.
            secs = now - start
            print(f"timed out after {timeout:.0f}s: {done} of {n} results SUCCESS", file=sys.stderr)
            print(json.dumps({"celery_tasks_per_sec": round(done / secs, 1), "tasks": done,
                              "secs": round(secs, 2), "timed_out": True, "published": n}))
            sys.exit(2)
        if now - last_report >= 10:
            print(f"{done}/{n} SUCCESS after {now - start:.0f}s", file=sys.stderr, flush=True)
            last_report = now
        time.sleep(0.2)
    secs = time.perf_counter() - start
    print(json.dumps({"celery_tasks_per_sec": round(n / secs, 1), "tasks": n, "secs": round(secs, 2)}))


def create_tables():
    """Creates the results tables up front: two worker processes creating
    them on their first result at the same moment would race."""
    app.backend.ResultSession().close()


if __name__ == "__main__":
    if sys.argv[1:] == ["init"]:
        create_tables()
    elif len(sys.argv) == 3 and sys.argv[1] == "publish":
        publish_and_wait(int(sys.argv[2]), float(os.environ.get("CELERY_BENCH_TIMEOUT", "240")))
    else:
        sys.exit("usage: tasks.py init | tasks.py publish N")
