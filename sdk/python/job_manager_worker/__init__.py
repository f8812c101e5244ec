"""Write job-manager workers in Python.

A worker consumes its queue ``<prefix>.worker.<worker_id>`` with manual acks, calls your
function with the task's ``inputs`` and ``configs``, publishes the stage-result to the
dispatch's ``reply_to`` and then acks. An exception becomes an ``error`` result (the coordinator
retries the task up to the stage's ``max_attempts``), and so do outputs that cannot be sent as
strict JSON (a ``set``, ``bytes``, NaN, an integer beyond 64 bits, …), with the reason. When a
task's job is aborted (``job.aborted`` on ``<prefix>.events``), ``task.cancelled`` is set and
its dispatch is acked without a result. The worker reconnects with backoff whenever the
connection drops.

``concurrency=N`` runs up to N handlers at once on a pool of threads in the one process (with
prefetch N); the default, 1, runs one task at a time. Only the connection's thread publishes and
acks: a handler's result comes back to it and is published, and its dispatch is acked once the
broker confirms the result. At shutdown the running handlers get ``shutdown_grace`` seconds (10) to return; the
dispatches not started, and those still running then, go back to the queue.

    from job_manager_worker import worker

    @worker("word-count", concurrency=8)
    def count(inputs, configs):
        return {"words": len(inputs["text"].split())}

    count.run()

Layout: ``worker`` (the :class:`Worker`, its settings and the handler call), ``session`` (one
connection: consume, the pool, publish and ack, abort, drain), ``confirms`` (results
published in confirm mode without waiting for each confirm), ``task`` (:class:`Task`),
``encoding`` (the stage-result as strict JSON), ``cleanup`` (:func:`subscribe_cleanup` to the
``job.cleanup`` events that name a finished job's intermediate outputs).
"""

from .cleanup import cleanup_outputs, subscribe_cleanup
from .worker import Task, Worker, worker

__all__ = ["Task", "Worker", "cleanup_outputs", "subscribe_cleanup", "worker"]
