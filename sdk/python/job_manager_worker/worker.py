"""The worker loop on pika's blocking connection."""

import inspect
import json
import logging
import math
import os
import threading
import traceback
import uuid

import pika
import pika.exceptions

log = logging.getLogger("job_manager_worker")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
DEFAULT_PREFIX = "job-manager"

#: The coordinator keeps integers as signed 64-bit values and refuses a result with any other.
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1
#: The largest result body the coordinator takes; it dead-letters a larger one unread.
MAX_RESULT_BYTES = 4 * 1024 * 1024
#: The coordinator keeps this much of ``log`` and ``error``.
MAX_TEXT_BYTES = 64 * 1024


class UnsendableOutputs(ValueError):
    """The handler's outputs cannot be sent as a JSON stage-result."""


def _first_bad_number(value):
    """``(path, reason)`` of the first number JSON or the coordinator cannot take (NaN, an
    infinity, an integer outside the signed 64-bit range) in ``value``, or ``None``."""
    stack = [("$", value)]
    seen = set()
    while stack:
        path, value = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not MIN_INT <= value <= MAX_INT:
                digits = str(value)
                if len(digits) > 40:
                    digits = "%s… (%d digits)" % (digits[:20], len(digits.lstrip("-")))
                return path, "integer %s is outside the signed 64-bit range" % digits
        elif isinstance(value, float):
            if not math.isfinite(value):
                return path, "%r is not a JSON number" % value
        elif isinstance(value, (dict, list, tuple)) and id(value) not in seen:
            seen.add(id(value))
            if isinstance(value, dict):
                items = [("%s.%s" % (path, key), item) for key, item in value.items()]
            else:
                items = [("%s[%d]" % (path, index), item) for index, item in enumerate(value)]
            stack.extend(reversed(items))
    return None


def _text(value):
    """``value`` as text the coordinator keeps whole: lone surrogates (say, from an undecodable
    file name) escaped, cut to :data:`MAX_TEXT_BYTES`."""
    if value is None:
        return None
    encoded = str(value).encode("utf-8", "backslashreplace")
    if len(encoded) > MAX_TEXT_BYTES:
        encoded = encoded[:MAX_TEXT_BYTES] + " …[cut]".encode()
    return encoded.decode("utf-8", "ignore")


def _strict_json(result):
    """``result`` as strict JSON in UTF-8: no NaN or Infinity, integers within 64 bits, only text
    that UTF-8 can encode. Raises :class:`UnsendableOutputs` with the reason; only ``outputs`` can
    be at fault (the texts are cleaned and the ids checked beforehand)."""
    try:
        body = json.dumps(result, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        raise UnsendableOutputs(
            "outputs cannot be sent as JSON: text holds %r, which UTF-8 cannot encode (%s)"
            % (error.object[error.start:error.end], error.reason)) from None
    except (TypeError, ValueError, RecursionError) as error:
        found = _first_bad_number(result["outputs"]) if isinstance(error, ValueError) else None
        reason = "%s (at %s)" % (found[1], found[0]) if found else error
        raise UnsendableOutputs("outputs cannot be sent as JSON: %s" % reason) from None
    found = _first_bad_number(result["outputs"])
    if found is not None:
        raise UnsendableOutputs("outputs cannot be sent as JSON: %s (at %s)" % (found[1], found[0]))
    if len(body) > MAX_RESULT_BYTES:
        raise UnsendableOutputs("outputs cannot be sent: the result is %d bytes, more than the %d bytes "
                                "the coordinator accepts" % (len(body), MAX_RESULT_BYTES))
    return body


def encode_result(task_id, job_id, outputs, log_text, error, run_id=None):
    """The body of a stage-result. Outputs that cannot be sent become an ``error`` result with the
    reason, so the job shows it instead of the worker dying or the task timing out. ``run_id``
    (the dispatch's) is echoed, so a late result of an earlier run of the job is told apart."""
    result = {"task_id": task_id, "job_id": job_id, "outputs": outputs,
              "log": _text(log_text), "error": _text(error)}
    if isinstance(run_id, str):
        result["run_id"] = run_id
    try:
        return _strict_json(result)
    except UnsendableOutputs as unsendable:
        log.warning("task %s: %s", task_id, unsendable)
        result.update(outputs=None, error=_text(unsendable))
        return _strict_json(result)


def _sendable_text(value):
    """``value`` if it is text a result can carry, else ``None`` (an optional field is dropped
    rather than failing the result)."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _describe(error):
    """``str(error)``, even when the exception's ``__str__`` itself fails."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001
        return "(its message could not be turned into text)"


class Task:
    """One dispatched task: what the handler gets besides ``inputs`` and ``configs``."""

    def __init__(self, dispatch):
        self.dispatch = dispatch
        self.task_id = dispatch["task_id"]
        self.job_id = dispatch["job_id"]
        if not isinstance(self.task_id, str) or not isinstance(self.job_id, str):
            raise TypeError("task_id and job_id must be strings")
        # Raises UnicodeEncodeError (a ValueError) on a lone surrogate, which no result could carry.
        (self.task_id + self.job_id).encode("utf-8")
        self.run_id = _sendable_text(dispatch.get("run_id"))
        self.stage_id = dispatch.get("stage_id")
        self.attempt = dispatch.get("attempt", 1)
        self.inputs = dispatch.get("inputs") or {}
        self.configs = dispatch.get("configs") or {}
        self.deadline = dispatch.get("deadline")
        #: Set when the task's job is aborted; long handlers should check it and return.
        self.cancelled = threading.Event()
        self._log = []

    def log(self, text):
        """Adds a line to the result's ``log``."""
        self._log.append(str(text))

    @property
    def log_text(self):
        return "\n".join(self._log) if self._log else None


class Worker:
    """Runs ``handler`` for every dispatch to ``worker_id``.

    ``handler(inputs, configs)`` or ``handler(inputs, configs, task)`` returns the outputs: a
    dict, a list of dicts and ``None``s, or ``None``.
    """

    def __init__(self, worker_id, handler, amqp_url=None, prefix=None, prefetch=1, max_backoff=5.0):
        self.worker_id = worker_id
        self.handler = handler
        self.amqp_url = amqp_url or os.environ.get("JOB_MANAGER_AMQP_URL", DEFAULT_AMQP_URL)
        self.prefix = prefix or os.environ.get("JOB_MANAGER_PREFIX", DEFAULT_PREFIX)
        self.prefetch = prefetch
        self.max_backoff = max_backoff
        self.connection_name = "job-manager-worker %s %s" % (worker_id, uuid.uuid4().hex[:8])
        self.connections = 0
        self._aborted = set()
        self._current = None
        try:
            self._wants_task = len(inspect.signature(handler).parameters) >= 3
        except (TypeError, ValueError):
            self._wants_task = False

    @property
    def queue(self):
        return "%s.worker.%s" % (self.prefix, self.worker_id)

    def run(self, stop=None):
        """Consumes until ``stop`` (a ``threading.Event``) is set, reconnecting as needed."""
        stop = stop or threading.Event()
        backoff = 0.2
        while not stop.is_set():
            try:
                self._session(stop)
                backoff = 0.2
            except (pika.exceptions.AMQPError, OSError) as error:
                if stop.is_set():
                    break
                log.warning("worker %s lost its connection (%r); reconnecting in %.1f s", self.worker_id, error, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _session(self, stop):
        parameters = pika.URLParameters(self.amqp_url)
        parameters.heartbeat = 30
        parameters.client_properties = {"connection_name": self.connection_name}
        connection = pika.BlockingConnection(parameters)
        self.connections += 1
        try:
            channel = connection.channel()
            # Exactly as the coordinator declares them, so either may come first.
            channel.exchange_declare("%s.dispatch" % self.prefix, "direct", durable=True)
            channel.queue_declare(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
            channel.queue_bind(self.queue, "%s.dispatch" % self.prefix, routing_key=self.worker_id)
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.confirm_delivery()
            events = connection.channel()
            events.exchange_declare("%s.events" % self.prefix, "topic", durable=True)
            aborted_queue = events.queue_declare("", exclusive=True).method.queue
            events.queue_bind(aborted_queue, "%s.events" % self.prefix, routing_key="job.aborted")
            events.basic_consume(aborted_queue, self._on_event, auto_ack=True)
            log.info("worker %s consuming %s", self.worker_id, self.queue)
            for method, properties, body in channel.consume(self.queue, inactivity_timeout=0.2):
                if stop.is_set():
                    break
                if method is None:
                    continue
                self._handle(connection, channel, method, properties, body, stop)
            channel.cancel()
        finally:
            if connection.is_open:
                try:
                    connection.close()
                except pika.exceptions.AMQPError:
                    pass

    def _on_event(self, _channel, _method, _properties, body):
        try:
            event = json.loads(body)
        except ValueError:
            return
        job_id = event.get("job_id")
        if event.get("status") == "aborted" and job_id:
            self._aborted.add(job_id)
            current = self._current
            if current is not None and current.job_id == job_id:
                current.cancelled.set()

    def _handle(self, connection, channel, method, properties, body, stop):
        try:
            dispatch = json.loads(body)
            task = Task(dispatch)
        except (ValueError, KeyError, TypeError) as error:
            log.error("dropping a malformed dispatch: %r", error)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        if task.job_id in self._aborted:
            log.info("task %s belongs to aborted job %s; skipping", task.task_id, task.job_id)
            channel.basic_ack(method.delivery_tag)
            return
        self._current = task
        outcome = {}

        def call():
            try:
                arguments = (task.inputs, task.configs, task) if self._wants_task else (task.inputs, task.configs)
                outcome["outputs"] = self.handler(*arguments)
            # BaseException too: a SystemExit in this thread would end it silently, and the task
            # would be reported done with null outputs.
            except BaseException as error:  # noqa: BLE001 - every failure becomes an error result
                outcome["error"] = "%s: %s" % (type(error).__name__, _describe(error))
                try:
                    task.log("".join(traceback.format_exception(type(error), error, error.__traceback__))[-4000:])
                except Exception:  # noqa: BLE001 - a broken __str__ must not lose the error result
                    pass

        thread = threading.Thread(target=call, name="task-%s" % task.task_id, daemon=True)
        thread.start()
        # Keep serving heartbeats and abort events while the handler runs.
        while thread.is_alive() and not task.cancelled.is_set() and not stop.is_set():
            connection.process_data_events(time_limit=0.2)
        self._current = None
        if task.cancelled.is_set():
            log.info("task %s stopped: job %s was aborted", task.task_id, task.job_id)
            channel.basic_ack(method.delivery_tag)
            return
        if thread.is_alive():
            # Shutting down mid-task: hand it back for another worker.
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        body = encode_result(task.task_id, task.job_id, outcome.get("outputs"), task.log_text,
                             outcome.get("error"), task.run_id)
        reply_to = properties.reply_to or "%s.results" % self.prefix
        # Publisher confirms are on: basic_publish returns once the broker has the result, and
        # only then is the dispatch acked.
        channel.basic_publish(
            exchange="",
            routing_key=reply_to,
            body=body,
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                correlation_id=task.task_id,
                type="stage-result",
            ),
        )
        channel.basic_ack(method.delivery_tag)


def worker(worker_id, **options):
    """Decorator: turns ``handler(inputs, configs[, task])`` into a :class:`Worker`."""

    def wrap(handler):
        return Worker(worker_id, handler, **options)

    return wrap


