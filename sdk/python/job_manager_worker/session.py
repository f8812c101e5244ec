"""One session on one connection: consume dispatches, run handlers on the worker's pool, publish
each result and only then ack its dispatch.

Threads. pika's ``BlockingConnection`` is not thread-safe: the thread that called
:meth:`Worker.run` owns the connection, and it alone receives, publishes and acks. Handlers run
on the :class:`Pool`'s threads; a handler that returns hands its encoded result back with
``connection.add_callback_threadsafe``, and the connection's thread publishes it and acks the
dispatch once the broker confirms the result (``confirms.py``: confirms are not awaited one by
one, so results of handlers that end together share the round trip).

Settling. Each delivery is settled once, by the connection's thread, on the connection that
delivered it:

- the handler returned (or raised): its result published, and once confirmed, ack;
- a malformed dispatch: reject without requeue;
- its job aborted, before the handler started or while it runs: ack without a result (the
  handler sees ``task.cancelled``);
- shutdown: not started yet, nack with requeue at once; running, its result if the handler
  returns and the result is confirmed within the grace, else ``task.cancelled`` and nack with
  requeue (or, for a result published and not confirmed yet, the broker requeues it when the
  connection closes);
- the connection lost: nothing. The broker hands the dispatch out again, and the result of a
  handler still running is dropped when it returns, never acked on a later connection (its
  ``add_callback_threadsafe`` targets the closed connection).
"""

import functools
import json
import logging
import queue
import threading
import time

import pika
import pika.exceptions

from .confirms import ResultChannel
from .task import Task

log = logging.getLogger("job_manager_worker")

#: How long the connection's thread waits for I/O before looking at the stop flag again.
POLL_S = 0.2


class Pool:
    """``size`` threads running submitted calls in order: at most ``size`` handlers at once,
    across sessions (a handler of a lost connection keeps its thread until it returns). Daemon
    threads, so a handler that never returns does not keep the process alive at exit."""

    def __init__(self, size, name):
        self._calls = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, name="%s-%d" % (name, n), daemon=True)
                         for n in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, call):
        """Runs ``call()`` on the first free thread."""
        self._calls.put(call)

    def close(self):
        """Lets each thread end after the calls submitted before; does not wait for them."""
        for _ in self._threads:
            self._calls.put(None)

    def _serve(self):
        while True:
            call = self._calls.get()
            if call is None:
                return
            try:
                call()
            except BaseException:  # noqa: BLE001 - the pool must not lose a thread
                log.exception("worker pool: a call failed")


class Delivery:
    """A dispatch a session holds, from its delivery until it is settled."""

    QUEUED, RUNNING, WITHDRAWN = "queued", "running", "withdrawn"

    def __init__(self, tag, task, reply_to):
        self.tag = tag
        self.task = task
        self.reply_to = reply_to
        #: The encoded stage-result, once the handler has returned.
        self.body = None
        self._state = self.QUEUED
        self._lock = threading.Lock()

    def start(self):
        """A pool thread takes it: ``False`` when the session withdrew it first."""
        return self._move(self.RUNNING)

    def withdraw(self):
        """Keeps it from starting: ``False`` when its handler has started already."""
        return self._move(self.WITHDRAWN)

    def _move(self, state):
        with self._lock:
            if self._state != self.QUEUED:
                return False
            self._state = state
            return True


class Session:
    """Serves ``worker`` on one connection of its own, running handlers on ``pool``."""

    def __init__(self, worker, pool):
        self.worker = worker
        self.pool = pool
        self.connection = None
        self.channel = None
        self.results = None
        #: Delivery tag → the delivery, until settled. Only the connection's thread touches it.
        self.in_flight = {}
        self._consumer_tag = None
        self._cancelled_by_broker = False

    def serve(self, stop):
        """Consumes until ``stop`` is set, then drains; raises when the connection fails. Returns
        early, without draining, when the broker cancels the consumer (its queue was deleted)."""
        try:
            self._open()
            while not stop.is_set() and not self._cancelled_by_broker:
                self.connection.process_data_events(time_limit=POLL_S)
            if not self._cancelled_by_broker:
                self._drain()
        finally:
            self._abandon()
            self._close()

    def _open(self):
        worker = self.worker
        parameters = pika.URLParameters(worker.amqp_url)
        parameters.heartbeat = 30
        parameters.client_properties = {"connection_name": worker.connection_name}
        self.connection = pika.BlockingConnection(parameters)
        worker.connections += 1
        channel = self.connection.channel()
        # Exactly as the coordinator declares them, so either may come first.
        channel.exchange_declare("%s.dispatch" % worker.prefix, "direct", durable=True)
        channel.queue_declare(worker.queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(worker.queue, "%s.dispatch" % worker.prefix, routing_key=worker.worker_id)
        channel.basic_qos(prefetch_count=worker.prefetch)
        channel.add_on_cancel_callback(self._on_broker_cancel)
        self.channel = channel
        self.results = ResultChannel(self.connection, self._confirmed)
        events = self.connection.channel()
        events.exchange_declare("%s.events" % worker.prefix, "topic", durable=True)
        aborted_queue = events.queue_declare("", exclusive=True).method.queue
        events.queue_bind(aborted_queue, "%s.events" % worker.prefix, routing_key="job.aborted")
        events.basic_consume(aborted_queue, self._on_event, auto_ack=True)
        self._consumer_tag = channel.basic_consume(worker.queue, self._on_dispatch)
        log.info("worker %s consuming %s (concurrency %d, prefetch %d)", worker.worker_id, worker.queue,
                 worker.concurrency, worker.prefetch)

    def _on_broker_cancel(self, _method):
        log.warning("worker %s: the broker cancelled the consumer of %s", self.worker.worker_id, self.worker.queue)
        self._cancelled_by_broker = True

    def _on_dispatch(self, channel, method, properties, body):
        try:
            task = Task(json.loads(body))
        except (ValueError, KeyError, TypeError) as error:
            log.error("dropping a malformed dispatch: %r", error)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        if task.job_id in self.worker.aborted:
            log.info("task %s belongs to aborted job %s; skipping", task.task_id, task.job_id)
            channel.basic_ack(method.delivery_tag)
            return
        delivery = Delivery(method.delivery_tag, task, properties.reply_to)
        self.in_flight[delivery.tag] = delivery
        self.pool.submit(functools.partial(self._run, delivery))

    def _run(self, delivery):
        """On a pool thread: runs the handler and hands the result to the connection's thread."""
        if not delivery.start():
            return
        delivery.body = self.worker.call_handler(delivery.task)
        try:
            self.connection.add_callback_threadsafe(functools.partial(self._finished, delivery))
        except pika.exceptions.ConnectionWrongStateError:
            log.info("task %s: its connection closed before the result was sent; the broker hands "
                     "the dispatch out again", delivery.task.task_id)

    def _finished(self, delivery):
        """On the connection's thread: publishes the result; :meth:`_confirmed` acks it."""
        if self.in_flight.pop(delivery.tag, None) is not delivery:
            return  # settled meanwhile: its job was aborted, or the shutdown grace ran out
        # The coordinator names the queue in reply_to (which may change); P.results is only the
        # fallback for a dispatch without one.
        reply_to = delivery.reply_to or "%s.results" % self.worker.prefix
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                          correlation_id=delivery.task.task_id, type="stage-result")
        self.results.publish(reply_to, delivery.body, properties, delivery)

    def _confirmed(self, delivery):
        """On the connection's thread: the broker has the result, so the dispatch is done."""
        self.channel.basic_ack(delivery.tag)

    def _on_event(self, _channel, _method, _properties, body):
        try:
            event = json.loads(body)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        job_id = event.get("job_id")
        if event.get("status") != "aborted" or not isinstance(job_id, str) or not job_id:
            return
        self.worker.aborted.add(job_id)
        for delivery in [d for d in self.in_flight.values() if d.task.job_id == job_id]:
            delivery.withdraw()
            delivery.task.cancelled.set()
            del self.in_flight[delivery.tag]
            log.info("task %s stopped: job %s was aborted", delivery.task.task_id, job_id)
            self.channel.basic_ack(delivery.tag)

    def _drain(self):
        """Stops consuming, hands back what has not started, and gives the running handlers the
        worker's ``shutdown_grace`` to return; those still running then go back to the queue."""
        self.channel.basic_cancel(self._consumer_tag)
        for delivery in list(self.in_flight.values()):
            if delivery.withdraw():
                del self.in_flight[delivery.tag]
                self.channel.basic_nack(delivery.tag, requeue=True)
        deadline = time.monotonic() + self.worker.shutdown_grace
        while (self.in_flight or self.results.unconfirmed) and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=min(POLL_S, max(0.0, deadline - time.monotonic())))
        for delivery in self.in_flight.values():
            log.warning("task %s still running after the shutdown grace; handing it back", delivery.task.task_id)
            delivery.task.cancelled.set()
            self.channel.basic_nack(delivery.tag, requeue=True)
        self.in_flight.clear()

    def _abandon(self):
        """Whatever is still held goes back to the broker with the connection: the handlers not
        started never start, and those running are told their result will not be sent."""
        for delivery in self.in_flight.values():
            delivery.withdraw()
            delivery.task.cancelled.set()
        self.in_flight.clear()

    def _close(self):
        if self.connection is not None and self.connection.is_open:
            try:
                self.connection.close()
            except pika.exceptions.AMQPError:
                pass
