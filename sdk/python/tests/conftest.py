"""Fixtures: a running job-manager (started by scripts/sdk-test.sh) and its REST API."""

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import pika
import pytest

API = os.environ.get("JOB_MANAGER_API_URL", "http://127.0.0.1:8000/job-manager")
AMQP_URL = os.environ.get("JOB_MANAGER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PREFIX = os.environ.get("JOB_MANAGER_PREFIX", "job-manager")


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(API + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        return error.code, json.loads(text) if text else None


def metric(name, **labels):
    """The sum of the service's Prometheus samples of ``name`` whose labels include ``labels``."""
    with urllib.request.urlopen(API + "/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = ['%s="%s"' % item for item in labels.items()]
    total = 0.0
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name and all(label in series for label in wanted):
            total += float(value)
    return total


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


class Jobs:
    """Registers a one-stage pipeline for a fresh worker id and starts jobs on it."""

    def __init__(self, max_attempts=3, timeout_s=60):
        self.worker_id = "py-" + uuid.uuid4().hex[:12]
        self.machine_id = "m-" + self.worker_id
        pipeline = {"name": "python sdk test", "stages": [{
            "worker": {"id": self.worker_id, "name": "Python test worker", "configs": {"lowercase": True},
                       "input": {"type": "single", "fields": [{"name": "text"}]},
                       "output": {"type": "single", "fields": [{"name": "words"}, {"name": "distinct"}]}},
            "input_map": {"text": "init:init_source"}, "max_attempts": max_attempts, "timeout_s": timeout_s}]}
        status, body = api("POST", "/pipelines", pipeline)
        assert status == 201, body
        status, body = api("PUT", "/machines/" + self.machine_id, {"pipeline_id": body["id"]})
        assert status == 201, body

    def start(self, text):
        status, body = api("POST", "/jobs", {"hash": uuid.uuid4().hex, "machine_id": self.machine_id, "file_name": text})
        assert status == 201, body
        return body["id"]

    def finished(self, job_id, timeout=30.0):
        def archived():
            status, body = api("GET", "/history/" + job_id)
            return body if status == 200 else None
        return wait_for(archived, timeout, "job %s in history" % job_id)


@pytest.fixture
def jobs():
    return Jobs()


@pytest.fixture
def run_worker():
    """Runs a Worker in a thread; stops them all after the test."""
    started = []

    def start(worker):
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        started.append((stop, thread))
        return stop

    yield start
    for stop, thread in started:
        stop.set()
        thread.join(timeout=10)


def close_connection(name):
    """Drops a RabbitMQ connection by its client-given name, as a network failure would."""
    listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
                             capture_output=True, text=True, check=True).stdout
    pids = [line.split("\t")[0] for line in listing.splitlines() if name in line]
    assert pids, "connection %r not found" % name
    for pid in pids:
        subprocess.run(["rabbitmqctl", "close_connection", pid, "test drops the connection"],
                       capture_output=True, check=True)


class Broker:
    """Direct access to RabbitMQ: dispatches published by hand, scratch queues, counts."""

    def __init__(self):
        self.connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.channel = self.connection.channel()
        self.queues = []

    def scratch_queue(self, arguments=None):
        """A queue of the test's own, deleted after the test."""
        name = "%s.sdk-test-%s" % (PREFIX, uuid.uuid4().hex[:12])
        self.channel.queue_declare(name, arguments=arguments)
        self.queues.append(name)
        return name

    def worker_queue(self, worker_id):
        """``P.worker.<worker_id>``, deleted after the test."""
        name = "%s.worker.%s" % (PREFIX, worker_id)
        self.queues.append(name)
        return name

    def dispatch(self, worker_id, body, reply_to):
        self.channel.basic_publish("%s.dispatch" % PREFIX, worker_id, json.dumps(body).encode(),
                                   pika.BasicProperties(reply_to=reply_to, delivery_mode=2,
                                                        content_type="application/json", type="stage-dispatch"))

    def ready(self, queue):
        """Messages ready in ``queue``."""
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def consumers(self, queue):
        try:
            return self.channel.queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            self.channel = self.connection.channel()
            return 0

    def take(self, queue, timeout=20.0):
        """The body of the next message in ``queue``."""
        def got():
            method, _properties, body = self.channel.basic_get(queue, auto_ack=True)
            return body if method is not None else None
        return wait_for(got, timeout, "a message in " + queue)

    def close(self):
        for queue in self.queues:
            if not self.channel.is_open:
                self.channel = self.connection.channel()
            self.channel.queue_delete(queue)
        self.connection.close()


@pytest.fixture
def broker():
    broker = Broker()
    try:
        yield broker
    finally:
        broker.close()
