"""Concurrency within one worker process (``Worker(concurrency=N)``), against the real RabbitMQ
and a running job-manager."""

import contextlib
import threading
import time

import pytest

from conftest import Jobs, api, close_connection, metric, wait_for
from job_manager_worker import Worker


class Gauge:
    """Counts the handlers running at once, and which tasks ran."""

    def __init__(self):
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.tasks = []

    @contextlib.contextmanager
    def running_one(self, task_id):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.tasks.append(task_id)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


def start_thread(sdk_worker):
    """Runs ``sdk_worker`` in a thread of the test's own, so the test can stop it mid-task."""
    stop = threading.Event()
    thread = threading.Thread(target=sdk_worker.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def only_task(record):
    """The one task of the record's worker stage."""
    tasks = record["stages"][1]["tasks"]
    assert len(tasks) == 1, tasks
    return tasks[0]


def test_concurrency_defaults_to_one_with_a_prefetch_to_match():
    sdk_worker = Worker("unused", lambda inputs, configs: None)
    assert (sdk_worker.concurrency, sdk_worker.prefetch) == (1, 1)
    assert Worker("unused", lambda inputs, configs: None, concurrency=8).prefetch == 8
    for wrong in (0, -1, 1.5, True, "4"):
        with pytest.raises(ValueError):
            Worker("unused", lambda inputs, configs: None, concurrency=wrong)


def test_handlers_run_at_once_up_to_the_concurrency_and_never_more(jobs, run_worker):
    concurrency = 3
    # Only `concurrency` handlers running together pass it; a lone one waits, then fails the test.
    barrier = threading.Barrier(concurrency, timeout=20)
    gauge = Gauge()

    def handler(inputs, configs, task):
        with gauge.running_one(task.task_id):
            barrier.wait()
            time.sleep(0.2)  # long enough for a handler beyond the concurrency to show
        return {"words": len(inputs["text"]), "distinct": 1}

    ignored = metric("job_manager_results_ignored_total")
    # A prefetch above the concurrency: the pool, not the broker, must hold the line.
    run_worker(Worker(jobs.worker_id, handler, concurrency=concurrency, prefetch=10))
    texts = {jobs.start("x" * n): "x" * n for n in range(1, 10)}
    for job_id, text in texts.items():
        record = jobs.finished(job_id)
        assert record["status"] == "finished", record
        assert record["stages"][1]["outputs"] == [{"words": len(text), "distinct": 1}]
    assert gauge.most == concurrency
    assert len(gauge.tasks) == len(set(gauge.tasks)) == 9, "every task ran once"
    assert metric("job_manager_tasks_completed_total", worker=jobs.worker_id) == 9
    assert metric("job_manager_results_ignored_total") == ignored, "no task got a second result"


def test_an_exception_in_one_handler_leaves_the_others_running(run_worker):
    jobs = Jobs(max_attempts=1)
    barrier = threading.Barrier(4, timeout=20)

    def handler(inputs, configs):
        barrier.wait()  # the failure happens while the other three run
        if inputs["text"] == "bad":
            raise ValueError("bad input")
        time.sleep(0.2)
        return {"words": 1, "distinct": 1}

    sdk_worker = Worker(jobs.worker_id, handler, concurrency=4)
    run_worker(sdk_worker)
    texts = {jobs.start(text): text for text in ["good", "bad", "good", "good"]}
    for job_id, text in texts.items():
        record = jobs.finished(job_id)
        if text == "bad":
            assert record["status"] == "failed", record
            assert "ValueError: bad input" in record["stages"][1]["error"], record
        else:
            assert record["status"] == "finished", record
            assert record["stages"][1]["outputs"] == [{"words": 1, "distinct": 1}]
    assert sdk_worker.connections == 1


def test_an_abort_stops_the_tasks_of_its_job_and_the_others_go_on(jobs, run_worker):
    tasks = {}

    def handler(inputs, configs, task):
        tasks[inputs["text"]] = task
        if inputs["text"] == "abort me":
            task.cancelled.wait(timeout=20)
        else:
            wait_for(lambda: "abort me" in tasks and tasks["abort me"].cancelled.is_set(), timeout=20,
                     what="the other job's task to be cancelled")
            time.sleep(0.2)
        return {"words": 1, "distinct": 1}

    run_worker(Worker(jobs.worker_id, handler, concurrency=2))
    aborted, kept = jobs.start("abort me"), jobs.start("keep")
    wait_for(lambda: len(tasks) == 2, timeout=20, what="both handlers to start")
    status, body = api("POST", "/jobs/" + aborted, {"status": "aborted"})
    assert status == 202, body
    assert jobs.finished(aborted)["status"] == "aborted"
    record = jobs.finished(kept)
    assert record["status"] == "finished", record
    assert not tasks["keep"].cancelled.is_set()


def test_shutdown_sends_the_results_of_running_handlers_and_hands_back_the_rest(jobs, run_worker):
    release = threading.Event()
    ran = []

    def waiting(inputs, configs):
        ran.append(inputs["text"])
        release.wait(timeout=20)
        return {"words": 1, "distinct": 1}

    # Three dispatches held, two running: the third waits in the process for a thread.
    stop, thread = start_thread(Worker(jobs.worker_id, waiting, concurrency=2, prefetch=3))
    texts = {jobs.start(text): text for text in ["one", "two", "three"]}
    wait_for(lambda: len(ran) == 2, timeout=20, what="two handlers running")
    time.sleep(0.3)
    stop.set()
    time.sleep(0.5)
    assert thread.is_alive(), "the worker waits for its running handlers"
    release.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(ran) == 2, ran
    for job_id, text in texts.items():
        if text in ran:
            record = jobs.finished(job_id, timeout=5)
            assert record["status"] == "finished", record
            assert only_task(record)["attempt"] == 1
    # The one handed back unrun is there for the next worker, as the same first attempt.
    run_worker(Worker(jobs.worker_id, lambda inputs, configs: {"words": 3, "distinct": 3}))
    [left] = [job_id for job_id, text in texts.items() if text not in ran]
    record = jobs.finished(left)
    assert record["stages"][1]["outputs"] == [{"words": 3, "distinct": 3}]
    assert only_task(record)["attempt"] == 1


def test_a_handler_still_running_after_the_grace_is_cancelled_and_its_task_handed_back(jobs, run_worker):
    seen = {}

    def stuck(inputs, configs, task):
        seen["task"] = task
        task.cancelled.wait(timeout=20)
        return {"words": 1, "distinct": 1}

    stop, thread = start_thread(Worker(jobs.worker_id, stuck, shutdown_grace=0.5))
    job_id = jobs.start("stuck")
    wait_for(lambda: "task" in seen, timeout=20, what="the handler to start")
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the worker stops once the grace has run out"
    assert seen["task"].cancelled.is_set()
    run_worker(Worker(jobs.worker_id, lambda inputs, configs: {"words": 2, "distinct": 2}))
    record = jobs.finished(job_id)
    assert record["stages"][1]["outputs"] == [{"words": 2, "distinct": 2}]
    assert only_task(record)["attempt"] == 1


def test_a_result_of_a_lost_connection_is_dropped_and_the_dispatch_runs_again(jobs, run_worker):
    first_may_return, second_may_return = threading.Event(), threading.Event()
    calls = []

    def handler(inputs, configs, task):
        calls.append(task)
        if len(calls) == 1:
            task.cancelled.wait(timeout=20)
            first_may_return.wait(timeout=20)
            return {"words": 1, "distinct": 1}
        second_may_return.wait(timeout=20)
        return {"words": 2, "distinct": 2}

    ignored = metric("job_manager_results_ignored_total")
    sdk_worker = Worker(jobs.worker_id, handler, concurrency=2)
    run_worker(sdk_worker)
    job_id = jobs.start("dropped")
    wait_for(lambda: calls, timeout=20, what="the handler to start")
    close_connection(sdk_worker.connection_name)
    wait_for(lambda: len(calls) == 2, timeout=20, what="the dispatch handed out again")
    assert calls[0].task_id == calls[1].task_id
    assert calls[0].cancelled.is_set(), "the first handler is told its result will not be sent"
    # The first handler returns while the second runs: its result must go nowhere, above all not
    # as an ack of whatever has the same delivery tag on the new connection.
    first_may_return.set()
    time.sleep(0.5)
    second_may_return.set()
    record = jobs.finished(job_id)
    assert record["stages"][1]["outputs"] == [{"words": 2, "distinct": 2}]
    assert only_task(record)["attempt"] == 1
    assert sdk_worker.connections == 2, "no channel error from a stale delivery tag"
    assert metric("job_manager_results_ignored_total") == ignored
