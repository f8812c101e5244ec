"""Tasks a second through one Python worker process at each concurrency, with handlers that
sleep (I/O-bound work), through a running job-manager.

    scripts/with-service.sh target/py-venv/bin/python sdk/python/examples/throughput.py
    # against a job-manager of your own (JOB_MANAGER_API_URL, JOB_MANAGER_AMQP_URL, JOB_MANAGER_PREFIX):
    PYTHONPATH=sdk/python python sdk/python/examples/throughput.py --tasks 400 --sleep-ms 20 --concurrency 1,4,16

For each concurrency: registers a one-stage pipeline for a worker id of its own, starts K
one-task jobs and waits until their K dispatches are queued, then runs a ``Worker`` and times
from its first handler starting to the K-th ``job.finished`` event, so the figure includes the
coordinator taking the results. It deletes the worker queue it used; the pipelines, machines and
jobs stay in the service's database.
"""

import argparse
import concurrent.futures
import json
import os
import sys
import threading
import time
import urllib.request
import uuid

import pika
import pika.exceptions

from job_manager_worker import Worker

API = os.environ.get("JOB_MANAGER_API_URL", "http://127.0.0.1:8000/job-manager")
AMQP_URL = os.environ.get("JOB_MANAGER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PREFIX = os.environ.get("JOB_MANAGER_PREFIX", "job-manager")


def api(method, path, body):
    request = urllib.request.Request(API + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read().decode() or "null")


def register(worker_id):
    """A one-stage pipeline on ``worker_id`` and its machine; returns the machine id."""
    field = {"name": "text"}
    pipeline = {"name": "throughput", "stages": [{
        "worker": {"id": worker_id, "name": "sleeper", "input": {"type": "single", "fields": [field]},
                   "output": {"type": "single", "fields": [{"name": "slept_ms"}]}},
        "input_map": {"text": "init:init_source"}, "max_attempts": 1, "timeout_s": 600}]}
    pipeline_id = api("POST", "/pipelines", pipeline)["id"]
    machine_id = "m-" + worker_id
    api("PUT", "/machines/" + machine_id, {"pipeline_id": pipeline_id})
    return machine_id


def start_jobs(machine_id, count):
    def start(n):
        body = {"hash": uuid.uuid4().hex, "machine_id": machine_id, "file_name": "task-%d" % n}
        return api("POST", "/jobs", body)["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return set(pool.map(start, range(count)))


def queued(connection, queue):
    """Messages ready in ``queue``, or 0 while it does not exist yet."""
    channel = connection.channel()
    try:
        return channel.queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if channel.is_open:
            channel.close()


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit("throughput: timed out waiting for " + what)
        time.sleep(0.1)


def measure(connection, concurrency, prefetch, tasks, sleep_s):
    """Tasks a second through a worker at ``concurrency`` holding ``prefetch`` dispatches."""
    worker_id = "throughput-%d-%s" % (concurrency, uuid.uuid4().hex[:8])
    channel = connection.channel()
    events = channel.queue_declare("", exclusive=True).method.queue
    for key in ("job.finished", "job.failed"):
        channel.queue_bind(events, "%s.events" % PREFIX, routing_key=key)
    job_ids = start_jobs(register(worker_id), tasks)
    queue = "%s.worker.%s" % (PREFIX, worker_id)
    wait_until(lambda: queued(connection, queue) >= tasks, 120, "%d dispatches in %s" % (tasks, queue))
    first_start = []

    def sleeper(inputs, configs):
        first_start.append(time.monotonic())
        time.sleep(sleep_s)
        return {"slept_ms": sleep_s * 1000}

    stop = threading.Event()
    worker = Worker(worker_id, sleeper, concurrency=concurrency, prefetch=prefetch)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        failed = ended = 0
        for method, _properties, body in channel.consume(events, auto_ack=True, inactivity_timeout=60):
            if method is None:
                sys.exit("throughput: no job ended for 60 s")
            event = json.loads(body)
            if event.get("job_id") in job_ids:
                ended += 1
                failed += event.get("status") != "finished"
                if ended == tasks:
                    break
        seconds = time.monotonic() - first_start[0]
        channel.cancel()
    finally:
        stop.set()
        thread.join(timeout=30)
        channel.queue_delete(queue)
        channel.close()
    if failed:
        sys.exit("throughput: %d of %d jobs failed" % (failed, tasks))
    return tasks / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks at each concurrency")
    parser.add_argument("--sleep-ms", type=float, default=20.0, help="how long each handler sleeps")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrencies to measure (comma-separated)")
    parser.add_argument("--prefetch-ratio", type=int, default=1,
                        help="dispatches held per handler (the SDK's default prefetch is the concurrency: 1)")
    args = parser.parse_args()
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        print("| concurrency | prefetch | tasks/s | ideal (concurrency × 1000 / sleep ms) |")
        print("|---|---|---|---|")
        for concurrency in [int(part) for part in args.concurrency.split(",")]:
            prefetch = concurrency * args.prefetch_ratio
            rate = measure(connection, concurrency, prefetch, args.tasks, args.sleep_ms / 1000)
            ideal = concurrency * 1000 / args.sleep_ms
            print("| %d | %d | %.0f | %.0f |" % (concurrency, prefetch, rate, ideal), flush=True)
    finally:
        connection.close()


if __name__ == "__main__":
    main()
