"""Where results go and when dispatches are acked, with dispatches published by hand (no
job-manager involved), against the real RabbitMQ."""

import json
import threading
import uuid

from conftest import wait_for
from job_manager_worker import Worker


def dispatch(text):
    return {"task_id": uuid.uuid4().hex, "job_id": "job-" + uuid.uuid4().hex[:8], "run_id": "run-1",
            "machine_id": "m", "pipeline_id": "p", "stage_id": "01", "worker": {"id": "w", "name": "w"},
            "inputs": {"text": text}, "configs": {}, "attempt": 1, "deadline": "2030-01-01T00:00:00Z"}


def serving(broker, sdk_worker):
    """Runs ``sdk_worker`` until the test stops it; returns the stop event and the thread, once it
    consumes its queue."""
    queue = broker.worker_queue(sdk_worker.worker_id)
    stop = threading.Event()
    thread = threading.Thread(target=sdk_worker.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: broker.consumers(queue), timeout=20, what="the worker to consume " + queue)
    return stop, thread


def test_the_result_goes_to_the_queue_the_dispatch_names_in_reply_to(broker):
    # The coordinator may name any queue (e.g. one of several result partitions): the worker
    # replies there, never to a name of its own.
    replies = broker.scratch_queue()
    sdk_worker = Worker("py-" + uuid.uuid4().hex[:12], lambda inputs, configs: {"echo": inputs["text"]},
                        concurrency=4)
    stop, thread = serving(broker, sdk_worker)
    try:
        sent = [dispatch("text %d" % n) for n in range(8)]
        for body in sent:
            broker.dispatch(sdk_worker.worker_id, body, reply_to=replies)
        results = [json.loads(broker.take(replies)) for _ in sent]
    finally:
        stop.set()
        thread.join(timeout=10)
    by_task = {result["task_id"]: result for result in results}
    assert len(by_task) == len(sent)
    for body in sent:
        assert by_task[body["task_id"]] == {"task_id": body["task_id"], "job_id": body["job_id"], "run_id": "run-1",
                                            "outputs": {"echo": body["inputs"]["text"]}, "log": None, "error": None}
    assert broker.ready(broker.worker_queue(sdk_worker.worker_id)) == 0, "every dispatch was acked"


def test_a_dispatch_whose_result_the_broker_refuses_is_never_acked(broker):
    # A queue that refuses every message: the broker nacks the result's publish.
    refusing = broker.scratch_queue({"x-max-length": 0, "x-overflow": "reject-publish"})
    calls = []

    def handler(inputs, configs):
        calls.append(inputs["text"])
        return {"words": 1}

    sdk_worker = Worker("py-" + uuid.uuid4().hex[:12], handler, concurrency=2, max_backoff=0.2)
    stop, thread = serving(broker, sdk_worker)
    try:
        broker.dispatch(sdk_worker.worker_id, dispatch("refused"), reply_to=refusing)
        # The session ends on the nack, as a lost connection would, and the dispatch comes back.
        wait_for(lambda: len(calls) >= 2 and sdk_worker.connections >= 2, timeout=20,
                 what="the dispatch to be handed out again on a new connection")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert broker.ready(broker.worker_queue(sdk_worker.worker_id)) == 1, "the dispatch is still there"
