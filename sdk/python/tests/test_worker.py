"""The Python SDK against the real RabbitMQ and a running job-manager."""

import importlib.util
import pathlib
import threading

from conftest import Jobs, api, close_connection, wait_for
from job_manager_worker import Worker, worker

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "word_count.py"


def load_example():
    spec = importlib.util.spec_from_file_location("word_count_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.word_count


def test_the_example_worker_runs_a_job_to_the_end(jobs, run_worker):
    example = load_example()
    run_worker(Worker(jobs.worker_id, example.handler))
    job_id = jobs.start("To be or not to be")
    record = jobs.finished(job_id)
    assert record["status"] == "finished", record
    stage = record["stages"][1]
    assert stage["outputs"] == [{"words": 6, "distinct": 4}]
    assert "counted 6 words" in stage["log"]


def test_the_decorator_passes_inputs_and_configs(jobs, run_worker):
    seen = {}

    @worker(jobs.worker_id)
    def echo(inputs, configs):
        seen.update(inputs=inputs, configs=configs)
        return [{"words": 1, "distinct": 1}, None]

    run_worker(echo)
    record = jobs.finished(jobs.start("hello"))
    assert seen == {"inputs": {"text": "hello"}, "configs": {"lowercase": True}}
    assert record["stages"][1]["outputs"] == [{"words": 1, "distinct": 1}, None]


def test_an_exception_becomes_an_error_result_and_the_job_fails_after_its_attempts(run_worker):
    jobs = Jobs(max_attempts=2)
    calls = []

    def broken(inputs, configs):
        calls.append(inputs)
        raise ValueError("cannot parse " + inputs["text"])

    run_worker(Worker(jobs.worker_id, broken))
    record = jobs.finished(jobs.start("garbage"))
    assert record["status"] == "failed"
    assert len(calls) == 2
    error = record["stages"][1]["error"]
    assert "ValueError: cannot parse garbage" in error and "after 2 attempt(s)" in error, error


def test_the_running_task_stops_when_its_job_is_aborted(jobs, run_worker):
    started = threading.Event()
    observed = {}

    def slow(inputs, configs, task):
        started.set()
        observed["cancelled"] = task.cancelled.wait(timeout=30)
        return {"words": 0, "distinct": 0}

    sdk_worker = Worker(jobs.worker_id, slow)
    run_worker(sdk_worker)
    job_id = jobs.start("long work")
    assert started.wait(timeout=20), "the task never started"
    status, body = api("POST", "/jobs/" + job_id, {"status": "aborted"})
    assert status == 202, body
    wait_for(lambda: "cancelled" in observed, timeout=10, what="the handler to see the abort")
    assert observed["cancelled"] is True
    assert jobs.finished(job_id)["status"] == "aborted"


def test_the_worker_reconnects_after_its_connection_drops(jobs, run_worker):
    sdk_worker = Worker(jobs.worker_id, lambda inputs, configs: {"words": 1, "distinct": 1})
    run_worker(sdk_worker)
    assert jobs.finished(jobs.start("first"))["status"] == "finished"
    close_connection(sdk_worker.connection_name)
    wait_for(lambda: sdk_worker.connections >= 2, timeout=20, what="a second connection")
    assert jobs.finished(jobs.start("second"))["status"] == "finished"


def test_outputs_that_cannot_be_sent_fail_the_attempt_and_the_worker_serves_on(run_worker):
    jobs = Jobs(max_attempts=1)
    unsendable = {
        "set": ({"words": {1, 2}}, "Object of type set is not JSON serializable"),
        "bytes": ({"words": b"six"}, "Object of type bytes is not JSON serializable"),
        "nan": ({"words": float("nan")}, "nan is not a JSON number (at $.words)"),
        "infinity": ({"words": float("inf")}, "inf is not a JSON number (at $.words)"),
        "2**64": ({"words": 2**64}, "integer 18446744073709551616 is outside the signed 64-bit range (at $.words)"),
    }

    def handler(inputs, configs):
        if inputs["text"] in unsendable:
            return unsendable[inputs["text"]][0]
        return {"words": 1, "distinct": 1}

    sdk_worker = Worker(jobs.worker_id, handler)
    run_worker(sdk_worker)
    started = {text: jobs.start(text) for text in unsendable}
    for text, job_id in started.items():
        record = jobs.finished(job_id)
        assert record["status"] == "failed", record
        stage = record["stages"][1]
        reason = "outputs cannot be sent as JSON: " + unsendable[text][1]
        assert [task["error"] for task in stage["tasks"]] == ["worker error: " + reason], stage
        assert reason in stage["error"], stage
    # The same worker, on its first connection, still completes a normal task.
    record = jobs.finished(jobs.start("normal"))
    assert record["status"] == "finished", record
    assert record["stages"][1]["outputs"] == [{"words": 1, "distinct": 1}]
    assert sdk_worker.connections == 1


def test_a_handler_that_exits_reports_an_error_not_a_success(run_worker):
    jobs = Jobs(max_attempts=1)

    def leaving(inputs, configs):
        raise SystemExit(3)

    run_worker(Worker(jobs.worker_id, leaving))
    record = jobs.finished(jobs.start("bye"))
    assert record["status"] == "failed", record
    assert "SystemExit: 3" in record["stages"][1]["error"], record
