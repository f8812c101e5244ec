"""Write job-manager workers in Python.

A worker consumes its queue ``<prefix>.worker.<worker_id>`` with manual acks, calls your
function with the task's ``inputs`` and ``configs``, publishes the stage-result to the
dispatch's ``reply_to`` and then acks. An exception becomes an ``error`` result (the coordinator
retries the task up to the stage's ``max_attempts``), and so do outputs that cannot be sent as
strict JSON (a ``set``, ``bytes``, NaN, an integer beyond 64 bits, …), with the reason. When the job of the running task is
aborted (``job.aborted`` on ``<prefix>.events``), ``task.cancelled`` is set and the worker stops
waiting for it. The worker reconnects with backoff whenever the connection drops.

    from job_manager_worker import worker

    @worker("word-count")
    def count(inputs, configs):
        return {"words": len(inputs["text"].split())}

    count.run()
"""

from .worker import Task, Worker, worker

__all__ = ["Task", "Worker", "worker"]
