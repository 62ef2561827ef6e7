"""chit tested from outside, as a client in another language would use it.

Only pika, msgpack and the standard library are used: no chit code. Everything
these tests rely on is written down in docs/protocol.md, so a failure here is
either a bug in chit or a gap in that document. The one thing from outside the
protocol is `rabbitmqctl list_connections`, used (when it is on PATH) to check
that chit did not reconnect.

run.sh starts a worker for command.execute and noop, and a receipts sink, on a
vhost of its own and passes:

  CHIT_WIRE_AMQP_URL    the vhost's URL
  CHIT_WIRE_OUT         a directory the tests may write output files into
  CHIT_WIRE_WORKER_PID  the worker's process id, to check it stays up
  CHIT_WIRE_SINK_URL    the sink's HTTP API (without it, the sink test is skipped)
  CHIT_WIRE_SINK_PID    the sink's process id

Every wait is for a condition with a deadline (`Broker.wait_for`), never a
fixed sleep: while it waits, pika delivers receipts to the tap.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import msgpack
import pika
import pika.exceptions

CAPABILITY = "command.execute"
NOOP = "noop"
TASK_EXCHANGE = "chit.tasks"
RECEIPT_EXCHANGE = "chit.receipts"
CONTROL_EXCHANGE = "chit.control"
TASK_QUEUE = "chit.task." + CAPABILITY
DEAD_QUEUE = "chit.dead." + CAPABILITY
# The routing key of receipt batches these tests publish themselves; the tap
# leaves them out, so that it sees only chit's.
OWN_RECEIPTS = "receipt.wire-test"
# Bytes that are not UTF-8, for AMQP short strings (issue 13): RabbitMQ relays
# them, and chit reads them with each invalid byte as U+FFFD.
NOT_UTF8 = b"\xff\xfe"

# Long enough for a loaded CI machine; a passing run takes a few seconds.
WAIT = 30.0
FINAL_TYPES = {"success", "failure", "retry_scheduled", "dead_lettered", "cancelled"}


def rfc3339(value):
    """Parses a receipt's created_at; chrono writes up to 9 fraction digits."""
    return datetime.fromisoformat(value)


class Broker:
    """One connection: a confirm-mode channel to publish on, a tap on the
    receipts exchange, and a channel that drains the dead-letter queue.

    pika's BlockingConnection is single-threaded: receipts reach the tap only
    while `wait_for` pumps the connection, which is the only way these tests wait.
    """

    def __init__(self, url):
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.pub = self.conn.channel()
        self.pub.confirm_delivery()
        self.receipts = []  # every receipt seen, in arrival order
        self.batches = []  # (routing key, content type, receipts in it)
        self.dead = {}  # message_id -> (properties, body) from the dead-letter queue
        tap = self.conn.channel()
        queue = tap.queue_declare("", exclusive=True, auto_delete=True).method.queue
        tap.queue_bind(queue, RECEIPT_EXCHANGE, "#")
        tap.basic_consume(queue, self._on_receipts)
        self.dlq = self.conn.channel()

    def close(self):
        self.conn.close()

    def _on_receipts(self, channel, method, props, body):
        if method.routing_key == OWN_RECEIPTS:
            channel.basic_ack(method.delivery_tag)
            return
        value = json.loads(body)
        batch = value if isinstance(value, list) else [value]
        self.batches.append((method.routing_key, props.content_type, len(batch)))
        self.receipts.extend(batch)
        channel.basic_ack(method.delivery_tag)

    def publish(self, body, props=None, exchange=TASK_EXCHANGE, routing_key=CAPABILITY):
        """Publishes with mandatory set; returns once the broker confirmed.
        Raises if no queue took the message."""
        self.pub.basic_publish(exchange, routing_key, body, props, mandatory=True)

    def wait_for(self, what, check, timeout=WAIT):
        """Returns check()'s first truthy value, pumping the connection between
        calls; fails the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.conn.process_data_events(time_limit=0.05)

    def chain(self, task_id):
        return [r for r in self.receipts if r["task_id"] == task_id]

    def wait_chain(self, task_id, done, what):
        """Waits until done(receipts of task_id) holds and returns those receipts."""

        def check():
            rs = self.chain(task_id)
            return rs if done(rs) else None

        return self.wait_for(f"{what} (task {task_id})", check)

    def drain_dead_letters(self):
        """Moves whatever the dead-letter queue holds into self.dead."""
        while True:
            method, props, body = self.dlq.basic_get(DEAD_QUEUE, auto_ack=False)
            if method is None:
                return
            self.dead[props.message_id] = (props, body)
            self.dlq.basic_ack(method.delivery_tag)

    def wait_dead_letter(self, task_id):
        def check():
            self.drain_dead_letters()
            return self.dead.get(task_id)

        return self.wait_for(f"task {task_id} in {DEAD_QUEUE}", check)

    def consumers(self, queue):
        """Consumers on `queue`, by a passive declare on a throwaway channel."""
        ch = self.conn.channel()
        try:
            return ch.queue_declare(queue, passive=True).method.consumer_count
        finally:
            if ch.is_open:
                ch.close()

    def queue_exists(self, queue):
        ch = self.conn.channel()
        try:
            ch.queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False
        finally:
            if ch.is_open:
                ch.close()


BROKER = None
OUT = None
URL = os.environ.get("CHIT_WIRE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SINK_URL = os.environ.get("CHIT_WIRE_SINK_URL")


def setUpModule():
    global BROKER, OUT
    OUT = Path(os.environ.get("CHIT_WIRE_OUT") or tempfile.mkdtemp(prefix="chit-wire-"))
    BROKER = Broker(URL)
    # The worker is ready once it consumes from the task queues.
    for queue in (TASK_QUEUE, "chit.task." + NOOP):
        BROKER.wait_for(f"a worker consuming from {queue}", lambda: BROKER.consumers(queue) >= 1)
    if SINK_URL:
        BROKER.wait_for("the sink's /healthz", lambda: sink_get("/healthz")[0] == 200)


def tearDownModule():
    if BROKER is not None:
        BROKER.close()


def of_type(receipts, receipt_type):
    return [r for r in receipts if r["receipt_type"] == receipt_type]


def only(receipts, receipt_type):
    found = of_type(receipts, receipt_type)
    assert len(found) == 1, f"expected one {receipt_type} receipt, got {json.dumps(receipts, indent=1)}"
    return found[0]


def has(*types):
    """A chain predicate: every receipt type in `types` is present."""
    return lambda rs: all(of_type(rs, t) for t in types)


def task_props(task_id, content_type="application/json", headers=None, task_type=CAPABILITY):
    """The properties a well-behaved publisher sets."""
    return pika.BasicProperties(
        message_id=task_id,
        type=task_type,
        content_type=content_type,
        delivery_mode=pika.DeliveryMode.Persistent,
        timestamp=int(time.time()),
        headers=headers or {},
    )


def new_id():
    return str(uuid.uuid4())


def final(receipts):
    return [r for r in receipts if r["receipt_type"] in FINAL_TYPES]


def sink_get(path):
    """GET on the sink's API: (status, decoded JSON body), (None, None) if it
    does not answer."""
    try:
        with urllib.request.urlopen(SINK_URL + path, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (urllib.error.URLError, ConnectionError):
        return None, None


def connections():
    """The broker's connection processes on this vhost, or None without
    rabbitmqctl. A client that reconnected shows up under a new process."""
    if not shutil.which("rabbitmqctl"):
        return None
    vhost = urllib.parse.unquote(urllib.parse.urlparse(URL).path[1:]) or "/"
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "vhost", "pid"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    rows = (line.split("\t") for line in out.splitlines())
    return {row[1] for row in rows if len(row) == 2 and row[0] == vhost}


def receipt(task_id, receipt_type="queued"):
    """A receipt as a client publishes it (docs/protocol.md, section 5)."""
    return {
        "receipt_id": new_id(),
        "task_id": task_id,
        "task_type": NOOP,
        "receipt_type": receipt_type,
        "parent_receipt_ids": [],
        "attempt": 1,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }


class WireTest(unittest.TestCase):
    def assert_worker_alive(self):
        pid = os.environ.get("CHIT_WIRE_WORKER_PID")
        if pid:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                self.fail(f"the worker (pid {pid}) has exited")

    def assert_sink_alive(self):
        pid = os.environ.get("CHIT_WIRE_SINK_PID")
        if pid:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                self.fail(f"the sink (pid {pid}) has exited")

    def assert_receipt_shape(self, r, task_id):
        self.assertEqual(r["task_id"], task_id)
        self.assertEqual(r["task_type"], CAPABILITY)
        self.assertTrue(r["receipt_id"])
        self.assertIsInstance(r["parent_receipt_ids"], list)
        self.assertIsInstance(r["attempt"], int)
        self.assertEqual(rfc3339(r["created_at"]).tzinfo, timezone.utc)

    def run_good_task(self):
        """Publishes a task that must succeed, and waits for its success."""
        task_id = new_id()
        BROKER.publish(json.dumps({"command": "true"}).encode(), task_props(task_id))
        chain = BROKER.wait_chain(task_id, lambda rs: of_type(rs, "success") or of_type(rs, "dead_lettered"), "a final receipt")
        self.assertTrue(of_type(chain, "success"), chain)
        self.assert_worker_alive()

    def assert_dead_lettered(self, task_id, body, problem):
        """The task failed before running, with `problem` in its failure
        receipt, and sits in the dead-letter queue; then the worker still runs tasks."""
        chain = BROKER.wait_chain(task_id, has("accepted", "failure", "dead_lettered"), "failure and dead_lettered")
        self.assertFalse(of_type(chain, "success"), chain)
        accepted = only(chain, "accepted")
        failure = only(chain, "failure")
        dead = only(chain, "dead_lettered")
        for r in (accepted, failure, dead):
            self.assert_receipt_shape(r, task_id)
        self.assertEqual(failure["parent_receipt_ids"], [accepted["receipt_id"]])
        self.assertEqual(dead["parent_receipt_ids"], [failure["receipt_id"]])
        self.assertIn(problem, failure["body"]["error"])
        self.assertEqual(failure["body"]["reason"], "invalid_payload")
        self.assertFalse(failure["body"]["retryable"])
        self.assertFalse(failure["body"]["will_retry"])
        self.assertEqual(dead["body"]["queue"], DEAD_QUEUE)
        self.assertIn(problem, dead["body"]["error"])

        props, dead_body = BROKER.wait_dead_letter(task_id)
        self.assertEqual(dead_body, body)
        headers = props.headers or {}
        self.assertIn(problem, headers.get("x-chit-last-error", ""))
        # The copy names the dead_lettered receipt, so a replay can continue the chain.
        self.assertEqual(headers.get("x-chit-parent-receipt-id"), dead["receipt_id"])

        self.run_good_task()
        return props

    # (a)
    def test_a_published_task_runs_and_accepted_names_the_header_parent(self):
        task_id = new_id()
        queued_id = new_id()
        out = OUT / f"{task_id}.json"
        payload = {
            "command": 'echo "$GREETING" | tr a-z A-Z; echo oops >&2',
            "env": {"GREETING": "hello"},
            "output_path": str(out),
        }
        props = task_props(task_id, headers={"x-chit-parent-receipt-id": queued_id})
        BROKER.publish(json.dumps(payload).encode(), props)

        chain = BROKER.wait_chain(task_id, has("accepted", "success"), "accepted and success")
        accepted = only(chain, "accepted")
        success = only(chain, "success")
        for r in (accepted, success):
            self.assert_receipt_shape(r, task_id)
            self.assertEqual(r["attempt"], 1)
            self.assertTrue(r["worker_id"])
        self.assertEqual(accepted["parent_receipt_ids"], [queued_id])
        self.assertEqual(accepted["body"]["delivery"], 1)
        self.assertIs(accepted["body"]["task_id_assigned"], False)
        self.assertEqual(success["parent_receipt_ids"], [accepted["receipt_id"]])
        self.assertEqual(success["body"]["exit_code"], 0)
        self.assertEqual(success["body"]["stderr_tail"], "oops\n")
        self.assertLessEqual(rfc3339(accepted["created_at"]), rfc3339(success["created_at"]))

        raw = out.read_bytes()
        written = json.loads(raw)
        self.assertEqual(written["command"], payload["command"])
        self.assertEqual(written["exit_code"], 0)
        self.assertEqual(written["stdout"], "HELLO\n")
        self.assertEqual(written["stderr"], "oops\n")
        self.assertIsInstance(written["duration_ms"], int)
        rfc3339(written["executed_at"])
        [artifact] = success["artifacts"]
        self.assertEqual(artifact["path"], str(out))
        self.assertEqual(artifact["content_type"], "application/json")
        self.assertEqual(artifact["size"], len(raw))
        self.assertEqual(artifact["sha256"], hashlib.sha256(raw).hexdigest())

        # Worker receipts travel as JSON arrays under receipt.worker.
        self.assertTrue(BROKER.batches)
        for routing_key, content_type, count in BROKER.batches:
            self.assertTrue(routing_key.startswith("receipt."), routing_key)
            self.assertEqual(content_type, "application/json")
            self.assertGreaterEqual(count, 1)
        self.assertIn("receipt.worker", {rk for rk, _, _ in BROKER.batches})

    # (b)
    def test_b_bare_body_without_properties_runs_and_its_chain_starts_at_accepted(self):
        out = OUT / f"bare-{new_id()}.json"
        BROKER.publish(json.dumps({"command": "echo bare", "output_path": str(out)}).encode())

        def success_for_out():
            for r in of_type(BROKER.receipts, "success"):
                if any(a.get("path") == str(out) for a in r.get("artifacts", [])):
                    return r
            return None

        success = BROKER.wait_for(f"a success receipt with artifact {out}", success_for_out)
        task_id = success["task_id"]
        # chit made the id up: a UUIDv7.
        self.assertEqual(uuid.UUID(task_id).version, 7)
        chain = BROKER.wait_chain(task_id, has("accepted"), "accepted")
        accepted = only(chain, "accepted")
        self.assert_receipt_shape(accepted, task_id)
        self.assertEqual(accepted["parent_receipt_ids"], [])
        self.assertEqual(accepted["attempt"], 1)
        self.assertIs(accepted["body"]["task_id_assigned"], True)
        self.assertEqual(success["parent_receipt_ids"], [accepted["receipt_id"]])
        self.assertFalse(of_type(chain, "queued"), chain)
        self.assertEqual(json.loads(out.read_text())["stdout"], "bare\n")

    # (c)
    def test_c_messagepack_body_runs(self):
        task_id = new_id()
        out = OUT / f"{task_id}.json"
        # With args there is no shell: "a b" stays one argument.
        payload = {"command": "printf", "args": ["%s|%s", "a b", "c"], "output_path": str(out)}
        BROKER.publish(msgpack.packb(payload), task_props(task_id, content_type="application/msgpack"))

        chain = BROKER.wait_chain(task_id, lambda rs: of_type(rs, "success") or of_type(rs, "dead_lettered"), "a final receipt")
        success = only(chain, "success")
        self.assertEqual(success["parent_receipt_ids"], [only(chain, "accepted")["receipt_id"]])
        self.assertEqual(json.loads(out.read_text())["stdout"], "a b|c")

    # (d)
    def test_d1_invalid_json_is_dead_lettered_and_the_worker_stays_up(self):
        task_id = new_id()
        body = b'{"command": "echo never",'
        BROKER.publish(body, task_props(task_id))
        self.assert_dead_lettered(task_id, body, "invalid JSON body")

    def test_d2_header_of_the_wrong_type_is_dead_lettered_and_the_worker_stays_up(self):
        task_id = new_id()
        body = json.dumps({"command": "echo never"}).encode()
        BROKER.publish(body, task_props(task_id, headers={"x-chit-attempt": "two"}))
        props = self.assert_dead_lettered(task_id, body, "x-chit-attempt")
        # The copy carries chit's own reading of the envelope, not the bad value.
        self.assertEqual(props.headers["x-chit-attempt"], 1)

    def test_d3_unknown_content_type_is_dead_lettered_and_the_worker_stays_up(self):
        task_id = new_id()
        body = b"<command>echo never</command>"
        BROKER.publish(body, task_props(task_id, content_type="application/xml"))
        self.assert_dead_lettered(task_id, body, "application/xml")

    def test_d4_payload_with_an_unknown_field_is_dead_lettered(self):
        task_id = new_id()
        body = json.dumps({"command": "echo never", "colour": "red"}).encode()
        BROKER.publish(body, task_props(task_id))
        self.assert_dead_lettered(task_id, body, "colour")

    # Beyond the brief's list: retries, integer headers of other widths, and cancellation.
    def test_f_failed_task_retries_through_a_delay_queue_then_dead_letters(self):
        task_id = new_id()
        queued_id = new_id()
        body = json.dumps({"command": "echo attempt $CHIT_ATTEMPT >&2; exit 3"}).encode()
        headers = {
            "x-chit-parent-receipt-id": queued_id,
            "x-chit-max-attempts": 2,  # pika sends a 32-bit signed integer
            "x-chit-backoff-ms": "40",  # a decimal string is accepted too
        }
        BROKER.publish(body, task_props(task_id, headers=headers))

        chain = BROKER.wait_chain(task_id, has("dead_lettered"), "dead_lettered after two attempts")
        accepted = sorted(of_type(chain, "accepted"), key=lambda r: r["attempt"])
        failures = sorted(of_type(chain, "failure"), key=lambda r: r["attempt"])
        retry = only(chain, "retry_scheduled")
        dead = only(chain, "dead_lettered")
        self.assertEqual([r["attempt"] for r in accepted], [1, 2])
        self.assertEqual([r["attempt"] for r in failures], [1, 2])
        self.assertEqual(accepted[0]["parent_receipt_ids"], [queued_id])
        self.assertEqual(failures[0]["parent_receipt_ids"], [accepted[0]["receipt_id"]])
        self.assertEqual(failures[0]["body"]["exit_code"], 3)
        self.assertEqual(failures[0]["body"]["stderr_tail"], "attempt 1\n")
        self.assertIs(failures[0]["body"]["will_retry"], True)
        self.assertEqual(failures[0]["body"]["max_attempts"], 2)
        self.assertEqual(retry["parent_receipt_ids"], [failures[0]["receipt_id"]])
        self.assertEqual(retry["body"]["next_attempt"], 2)
        delay_ms = retry["body"]["delay_ms"]
        self.assertTrue(1 <= delay_ms <= 40, delay_ms)
        # The retry's delivery names the retry_scheduled receipt.
        self.assertEqual(accepted[1]["parent_receipt_ids"], [retry["receipt_id"]])
        self.assertEqual(failures[1]["body"]["stderr_tail"], "attempt 2\n")
        self.assertIs(failures[1]["body"]["will_retry"], False)
        self.assertEqual(dead["parent_receipt_ids"], [failures[1]["receipt_id"]])
        self.assertEqual(dead["body"]["attempts"], 2)
        self.assertTrue(BROKER.queue_exists(f"chit.wait.{delay_ms}.{CAPABILITY}"))

        props, dead_body = BROKER.wait_dead_letter(task_id)
        self.assertEqual(dead_body, body)
        self.assertEqual(props.headers["x-chit-attempt"], 2)
        self.assertEqual(props.headers["x-chit-parent-receipt-id"], dead["receipt_id"])
        self.assertIn("exited with code 3", props.headers["x-chit-last-error"])

    def test_g_cancel_request_stops_a_running_task(self):
        task_id = new_id()
        BROKER.publish(json.dumps({"command": "sleep 30"}).encode(), task_props(task_id))
        chain = BROKER.wait_chain(task_id, has("accepted"), "accepted")
        accepted = only(chain, "accepted")

        request = {
            "task_id": task_id,
            "force": False,
            "requested_at": datetime.now(timezone.utc).isoformat(),
        }
        BROKER.publish(
            json.dumps(request).encode(),
            pika.BasicProperties(content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent),
            exchange=CONTROL_EXCHANGE,
            routing_key="",
        )
        chain = BROKER.wait_chain(task_id, lambda rs: [r for r in rs if r["receipt_type"] in FINAL_TYPES], "a final receipt")
        cancelled = only(chain, "cancelled")
        self.assertEqual(cancelled["parent_receipt_ids"], [accepted["receipt_id"]])
        self.assertEqual(cancelled["body"]["reason"], "cancelled")
        self.assertFalse(of_type(chain, "success"), chain)
        self.assertFalse(of_type(chain, "retry_scheduled"), chain)

    # (h) Short strings that are not UTF-8 (issue 13, item 0). The broker relays
    # them; chit used to drop its connection on them, on every redelivery.
    def assert_read_without_reconnecting(self, props, task_id):
        """Publishes a noop task with `props` (its message_id read as
        `task_id`), then a well-formed one: each runs once and succeeds, and
        no connection to the vhost was replaced."""
        before = connections()
        self.assertNotEqual(before, set(), "no connection on the vhost: is this the broker chit uses?")
        BROKER.publish(b"{}", props, routing_key=NOOP)
        next_id = new_id()
        BROKER.publish(b"{}", task_props(next_id, task_type=NOOP), routing_key=NOOP)
        for tid in (task_id, next_id):
            chain = BROKER.wait_chain(tid, final, "a final receipt")
            accepted = only(chain, "accepted")
            success = only(chain, "success")
            self.assertEqual(accepted["body"]["delivery"], 1)
            self.assertIs(accepted["body"]["redelivered"], False)
            self.assertEqual(success["parent_receipt_ids"], [accepted["receipt_id"]])
        self.assertEqual(connections(), before)
        self.assert_worker_alive()

    def test_h1_message_id_not_utf8_is_read_lossily_and_the_worker_keeps_its_connection(self):
        raw_id = b"x-" + NOT_UTF8 + b"-" + new_id().encode()
        task_id = raw_id.decode("utf-8", "replace")  # "x-\ufffd\ufffd-..."
        props = task_props(new_id(), task_type=NOOP)
        props.message_id = raw_id
        self.assert_read_without_reconnecting(props, task_id)
        if SINK_URL:
            # The chain under the lossy id reaches the store.
            def stored():
                status, view = sink_get("/v1/tasks/" + urllib.parse.quote(task_id, safe=""))
                return status == 200 and of_type(view["chain"], "success")

            BROKER.wait_for(f"the sink to store task {task_id!r}", stored)

    def test_h2_header_name_not_utf8_is_read_lossily_and_the_worker_keeps_its_connection(self):
        task_id = new_id()
        props = task_props(task_id, task_type=NOOP, headers={b"x-" + NOT_UTF8: "foreign"})
        self.assert_read_without_reconnecting(props, task_id)

    def test_h3_content_type_not_utf8_gets_a_failure_receipt_and_is_dead_lettered(self):
        before = connections()
        self.assertNotEqual(before, set(), "no connection on the vhost: is this the broker chit uses?")
        task_id = new_id()
        body = json.dumps({"command": "echo never"}).encode()
        BROKER.publish(body, task_props(task_id, content_type=b"application/json" + NOT_UTF8))
        self.assert_dead_lettered(task_id, body, "application/json\ufffd\ufffd")
        self.assertEqual(connections(), before)

    # (i)
    @unittest.skipUnless(SINK_URL, "needs the sink started by run.sh")
    def test_i_receipt_batch_with_a_content_type_not_utf8_is_quarantined_and_the_sink_goes_on(self):
        before = connections()
        self.assertNotEqual(before, set(), "no connection on the vhost: is this the broker chit uses?")
        bad_task, good_task = new_id(), new_id()
        bad = json.dumps([receipt(bad_task)]).encode()
        BROKER.publish(
            bad,
            pika.BasicProperties(content_type=b"application/json" + NOT_UTF8, delivery_mode=2),
            exchange=RECEIPT_EXCHANGE,
            routing_key=OWN_RECEIPTS,
        )
        BROKER.publish(
            json.dumps([receipt(good_task)]).encode(),
            pika.BasicProperties(content_type="application/json", delivery_mode=2),
            exchange=RECEIPT_EXCHANGE,
            routing_key=OWN_RECEIPTS,
        )
        # The sink reads its queue in order: once the good batch is stored,
        # the bad one before it has been handled.
        BROKER.wait_for(f"the sink to store task {good_task}", lambda: sink_get(f"/v1/tasks/{good_task}")[0] == 200)

        status, body = sink_get("/v1/quarantine?limit=500")
        self.assertEqual(status, 200)
        [record] = [q for q in body["quarantined"] if bad_task in q["raw"]]
        self.assertEqual(record["raw"], bad.decode())
        self.assertIn("application/json\ufffd\ufffd", record["reason"])
        self.assertEqual(sink_get(f"/v1/tasks/{bad_task}")[0], 404)
        self.assertEqual(sink_get("/healthz"), (200, {"store": "ok", "broker": "connected"}))
        self.assertEqual(connections(), before)
        self.assert_sink_alive()


if __name__ == "__main__":
    unittest.main(verbosity=2)
