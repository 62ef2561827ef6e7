"""Summarises `perf script` output of one process (see bench/profile.sh).

Usage: python3 bench/perf_summary.py FILE           where the CPU goes
       python3 bench/perf_summary.py FILE SYMBOL    who calls SYMBOL (self time)

Each sample is charged to a component by its innermost frame that belongs to
a known crate; frames in libc (malloc, memcpy) and in the kernel are charged
to their caller, and the kernel's part is shown apart. chit's own functions
are listed by inclusive share: the samples with that function on the stack.
"""

import collections
import re
import sys

# A crate path where a symbol's path starts (not `tokio::...::worker::`).
def crate(*names):
    return re.compile(r"(?:^|(?<=[<\s&(]))(?:%s)::" % "|".join(names))

COMPONENTS = [
    ("SQLite (sqlite3, sqlx)", re.compile(r"^(sqlite3|pcache|balance_|wal|vdbe|cellSize|pager|unix)|" + crate("sqlx_sqlite", "sqlx_core").pattern, re.I)),
    ("JSON (serde_json)", crate("serde_json")),
    ("AMQP (lapin, amq-protocol)", crate("lapin", "amq_protocol", "amq_protocol_types", "amq_protocol_codegen", "nom")),
    ("tracing, logs", crate("tracing", "tracing_core", "tracing_subscriber", "tracing_opentelemetry", "opentelemetry")),
    ("metrics (prometheus)", crate("prometheus")),
    ("ids and clocks (uuid, chrono, time)", crate("uuid", "chrono", "time")),
    ("tokio runtime, threads", crate("tokio", "mio", "parking_lot", "std::sys", "flume", "futures_util", "tokio_util")),
]
CHIT = re.compile(crate("worker", "receipts_sink", "broker_link", "broker_topology", "producer", "chit").pattern
                  + r"[A-Za-z0-9_]+(?:::[A-Za-z0-9_]+)*")
ELSEWHERE = ("kallsyms", "libc.so", "vdso")


def samples(path):
    """Yields (thread name, [(symbol, dso), ...] innermost first)."""
    comm, frames = None, []
    for line in open(path, errors="replace"):
        if not line.strip():
            if frames:
                yield comm, frames
            comm, frames = None, []
        elif not line[0].isspace():
            comm = line.split()[0]
        else:
            m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
            if m:
                frames.append((m.group(1), m.group(2)))
    if frames:
        yield comm, frames


def component(frames):
    for sym, dso in frames:
        if any(e in dso for e in ELSEWHERE):
            continue
        for name, rx in COMPONENTS:
            if rx.search(sym):
                return name
        if CHIT.search(sym):
            return "chit's code"
    return "other"


def summary(path, top=15):
    n = 0
    comp, kern, threads, incl, selfsym = (collections.Counter() for _ in range(5))
    for comm, frames in samples(path):
        n += 1
        c = component(frames)
        comp[c] += 1
        if "kallsyms" in frames[0][1]:
            kern[c] += 1
        threads[re.sub(r"[-0-9]+$", "", comm or "?")] += 1
        on_stack = set()
        for sym, _ in frames:
            m = CHIT.search(sym)
            if m:
                on_stack.add(m.group(0))
        incl.update(on_stack)
        selfsym[frames[0][0][:90]] += 1
    if not n:
        sys.exit(f"{path}: no samples")
    pct = lambda k: f"{100 * k / n:5.1f}%"
    print(f"{path}: {n} samples")
    print("threads: " + ", ".join(f"{k} {pct(v)}" for k, v in threads.most_common(6)))
    print("by component (kernel part in parentheses):")
    for k, v in comp.most_common():
        print(f"  {pct(v)}  {k}  ({pct(kern[k]).strip()} kernel)")
    print("chit's functions, inclusive:")
    for k, v in incl.most_common(top):
        print(f"  {pct(v)}  {k}")
    print("self, top symbols:")
    for k, v in selfsym.most_common(top):
        print(f"  {pct(v)}  {k}")


def callers(path, target, depth=4, top=12):
    c, n = collections.Counter(), 0
    for _, frames in samples(path):
        if target not in frames[0][0]:
            continue
        n += 1
        outer = [s for s, d in frames[1:]
                 if not any(e in d for e in ELSEWHERE) and not s.startswith(("alloc::", "<alloc::", "core::", "<core::"))]
        c[" <- ".join(s[:70] for s in outer[:depth])] += 1
    print(f"{target}: {n} samples (self)")
    for k, v in c.most_common(top):
        print(f"  {v:5d}  {k}")


if __name__ == "__main__":
    if len(sys.argv) == 2:
        summary(sys.argv[1])
    elif len(sys.argv) == 3:
        callers(sys.argv[1], sys.argv[2])
    else:
        sys.exit(__doc__)
