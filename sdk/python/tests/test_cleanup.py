"""The cleanup helper against the real RabbitMQ and a running job-manager."""

import threading
import uuid

from conftest import PREFIX, api, wait_for
from job_manager_worker import cleanup_outputs, subscribe_cleanup


def two_stage_machine():
    worker = "py-clean-" + uuid.uuid4().hex[:8]
    stage = lambda n, source: {  # noqa: E731
        "worker": {"id": "%s-%d" % (worker, n), "name": "step %d" % n,
                   "input": {"type": "single", "fields": [{"name": "file"}]},
                   "output": {"type": "single", "fields": [{"name": "file"}]}},
        "input_map": {"file": source}}
    pipeline = {"name": "cleanup test", "stages": [stage(1, "init:init_source"), stage(2, "file")]}
    status, body = api("POST", "/pipelines", pipeline)
    assert status == 201, body
    machine = "m-" + worker
    status, body = api("PUT", "/machines/" + machine, {"pipeline_id": body["id"]})
    assert status == 201, body
    return machine, [stage["worker"]["id"] for stage in pipeline["stages"]]


def answer(job_id, stage_id, outputs):
    def in_flight():
        status, job = api("GET", "/jobs/" + job_id)
        stage = job.get("current_stage") if status == 200 else None
        return stage if stage and stage["id"] == stage_id else None
    stage = wait_for(in_flight, 20, "stage %s of %s" % (stage_id, job_id))
    status, body = api("POST", "/jobs/" + job_id, {stage["tasks"][0]["task_id"]: outputs})
    assert status == 202, body


def test_a_finished_job_names_its_intermediate_files_to_the_subscriber(broker):
    machine, workers = two_stage_machine()
    for worker in workers:
        broker.worker_queue(worker)  # deleted after the test
    received = []
    done = threading.Event()
    queue = "sdk-test-" + uuid.uuid4().hex[:8]
    broker.queues.append("%s.cleanup.%s" % (PREFIX, queue))

    def handler(event):
        received.append(event)
        done.set()

    subscriber = threading.Thread(
        target=subscribe_cleanup, args=(handler,),
        kwargs={"prefix": PREFIX, "queue": queue, "stop": done.is_set}, daemon=True)
    subscriber.start()
    wait_for(lambda: broker.consumers("%s.cleanup.%s" % (PREFIX, queue)) == 1, 10, "the subscriber")
    status, body = api("POST", "/jobs", {"hash": uuid.uuid4().hex, "machine_id": machine, "file_name": "in.csv"})
    assert status == 201, body
    job_id = body["id"]
    answer(job_id, "01", {"file": "/tmp/step-1.csv"})
    answer(job_id, "02", {"file": "/tmp/final.csv"})
    assert done.wait(20), "no cleanup event"
    subscriber.join(timeout=10)
    event = received[0]
    assert event["job_id"] == job_id and event["status"] == "finished"
    assert (event["part"], event["parts"]) == (1, 1)
    assert cleanup_outputs(event) == [("01", {"file": "/tmp/step-1.csv"})]


def test_an_event_that_is_not_json_is_skipped_and_a_failing_handler_leaves_it_queued(broker):
    queue = "sdk-test-" + uuid.uuid4().hex[:8]
    name = "%s.cleanup.%s" % (PREFIX, queue)
    broker.channel.queue_declare(name, durable=True)
    broker.queues.append(name)
    broker.channel.basic_publish("", name, b"not json")
    broker.channel.basic_publish("", name, b'{"job_id": "j", "stages": []}')

    def failing(event):
        raise RuntimeError("disk full")

    try:
        subscribe_cleanup(failing, prefix=PREFIX, queue=queue)
    except RuntimeError as error:
        assert "disk full" in str(error)
    else:
        raise AssertionError("the handler's error is raised")
    assert wait_for(lambda: broker.ready(name) == 1, 10, "the event back in the queue")
