"""One dispatched task, as a handler sees it."""

import threading

from .encoding import sendable_text


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
        self.run_id = sendable_text(dispatch.get("run_id"))
        self.stage_id = dispatch.get("stage_id")
        self.attempt = dispatch.get("attempt", 1)
        self.inputs = dispatch.get("inputs") or {}
        self.configs = dispatch.get("configs") or {}
        self.deadline = dispatch.get("deadline")
        #: Set when the worker will not report this task's result: its job was aborted, the
        #: connection it came on was lost (the broker hands the dispatch out again), or it was
        #: still running when the shutdown grace ran out. Long handlers should check it and return;
        #: a handler keeps its place in the pool until it does.
        self.cancelled = threading.Event()
        self._log = []

    def log(self, text):
        """Adds a line to the result's ``log``."""
        self._log.append(str(text))

    @property
    def log_text(self):
        """The lines added with :meth:`log`, or ``None``."""
        return "\n".join(self._log) if self._log else None
