"""The worker: its settings, the handler call, and the reconnect loop around sessions
(``session.py``)."""

import inspect
import logging
import os
import threading
import traceback
import uuid

import pika.exceptions

from .encoding import (  # noqa: F401 - re-exported: the names were first defined here
    MAX_INT,
    MAX_RESULT_BYTES,
    MAX_TEXT_BYTES,
    MIN_INT,
    UnsendableOutputs,
    describe,
    encode_result,
)
from .session import Pool, Session
from .task import Task

log = logging.getLogger("job_manager_worker")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
DEFAULT_PREFIX = "job-manager"


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("%s must be an integer of at least 1, not %r" % (name, value))
    return value


class Worker:
    """Runs ``handler`` for every dispatch to ``worker_id``.

    ``handler(inputs, configs)`` or ``handler(inputs, configs, task)`` returns the outputs: a
    dict, a list of dicts and ``None``s, or ``None``.

    ``concurrency``: how many handlers run at once, each on a thread of the worker's pool (default
    1: one task at a time). Threads suit handlers that wait (I/O, subprocesses, native code that
    releases the GIL); CPU-bound Python handlers share one core whatever the concurrency, so run
    more processes instead. A handler that ignores ``task.cancelled`` keeps its thread until it
    returns, so never more than ``concurrency`` handlers run, even across reconnects.

    ``prefetch``: dispatches held unacked at once (default: ``concurrency``). More than
    ``concurrency`` keeps the rest waiting in this process, where other workers cannot take them.

    ``shutdown_grace``: seconds the running handlers get to return once ``run``'s ``stop`` is set
    (their results are sent); dispatches not started, and those still running then, go back to
    the queue for another worker.

    ``max_backoff``: the longest pause between reconnects (the first is 0.2 s, then doubling).
    """

    def __init__(self, worker_id, handler, amqp_url=None, prefix=None, prefetch=None, max_backoff=5.0,
                 concurrency=1, shutdown_grace=10.0):
        self.worker_id = worker_id
        self.handler = handler
        self.amqp_url = amqp_url or os.environ.get("JOB_MANAGER_AMQP_URL", DEFAULT_AMQP_URL)
        self.prefix = prefix or os.environ.get("JOB_MANAGER_PREFIX", DEFAULT_PREFIX)
        self.concurrency = _positive_int("concurrency", concurrency)
        self.prefetch = self.concurrency if prefetch is None else _positive_int("prefetch", prefetch)
        self.shutdown_grace = shutdown_grace
        self.max_backoff = max_backoff
        self.connection_name = "job-manager-worker %s %s" % (worker_id, uuid.uuid4().hex[:8])
        #: Connections opened so far (the first, then one per reconnect).
        self.connections = 0
        #: Ids of the jobs seen aborted: their dispatches are acked without running.
        self.aborted = set()
        try:
            self._wants_task = len(inspect.signature(handler).parameters) >= 3
        except (TypeError, ValueError):
            self._wants_task = False

    @property
    def queue(self):
        """The queue this worker consumes: ``<prefix>.worker.<worker_id>``."""
        return "%s.worker.%s" % (self.prefix, self.worker_id)

    def run(self, stop=None):
        """Consumes until ``stop`` (a ``threading.Event``) is set, reconnecting as needed; then
        drains (see ``shutdown_grace``) and returns."""
        stop = stop or threading.Event()
        pool = Pool(self.concurrency, "task-%s" % self.worker_id)
        backoff = 0.2
        try:
            while not stop.is_set():
                try:
                    Session(self, pool).serve(stop)
                    backoff = 0.2
                except (pika.exceptions.AMQPError, OSError) as error:
                    if stop.is_set():
                        break
                    log.warning("worker %s lost its connection (%r); reconnecting in %.1f s", self.worker_id,
                                error, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        finally:
            pool.close()

    def call_handler(self, task):
        """Runs the handler for ``task`` (on a pool thread) and returns the stage-result's body:
        an exception, or outputs that cannot be sent, become an error result."""
        outputs = error = None
        try:
            arguments = (task.inputs, task.configs, task) if self._wants_task else (task.inputs, task.configs)
            outputs = self.handler(*arguments)
        # BaseException too: a SystemExit in a pool thread would otherwise be reported as a task
        # done with null outputs, or lose the thread.
        except BaseException as failure:  # noqa: BLE001 - every failure becomes an error result
            error = "%s: %s" % (type(failure).__name__, describe(failure))
            try:
                task.log("".join(traceback.format_exception(type(failure), failure, failure.__traceback__))[-4000:])
            except Exception:  # noqa: BLE001 - a broken __str__ must not lose the error result
                pass
        return encode_result(task.task_id, task.job_id, outputs, task.log_text, error, task.run_id)


def worker(worker_id, **options):
    """Decorator: turns ``handler(inputs, configs[, task])`` into a :class:`Worker`; ``options``
    are the :class:`Worker`'s (``concurrency``, ``prefetch``, ``shutdown_grace``, …)."""

    def wrap(handler):
        return Worker(worker_id, handler, **options)

    return wrap
