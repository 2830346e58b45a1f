"""The job queue: a bounded list of pending jobs and ``workers`` threads; jobs on one memory run one at a time
(every sample is observed once, in order), jobs on different memories run side by side."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable


class QueueFull(Exception):
    pass


class Scheduler:
    def __init__(self, run: Callable[[str], None], workers: int, max_pending: int):
        self.run, self.max_pending = run, max_pending
        self.pending: list[tuple[str, str | None]] = []  # (job id, memory key or None: a session-only job)
        self.busy: set[str] = set()
        self.cv = threading.Condition()
        self.stopping = False
        self.threads = [threading.Thread(target=self._work, name=f"noveltynets-worker-{i}", daemon=True) for i in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, job: str, key: str | None) -> None:
        with self.cv:
            if len(self.pending) >= self.max_pending:
                raise QueueFull(f"the job queue is full ({self.max_pending} pending): try again shortly")
            self.pending.append((job, key))
            self.cv.notify_all()

    def queued(self) -> int:
        with self.cv:
            return len(self.pending)

    def _next(self) -> tuple[str, str | None] | None:
        """The oldest pending job whose memory is free (called with the lock held)."""
        for k, (job, key) in enumerate(self.pending):
            if key is None or key not in self.busy:
                return self.pending.pop(k)
        return None

    def _work(self) -> None:
        while True:
            with self.cv:
                while not self.stopping and (item := self._next()) is None:
                    self.cv.wait()
                if self.stopping:
                    return
                job, key = item
                if key is not None:
                    self.busy.add(key)
            try:
                self.run(job)
            finally:
                with self.cv:
                    self.busy.discard(key)
                    self.cv.notify_all()

    @contextmanager
    def exclusive(self, key: str):
        """Hold memory ``key`` as a job would (a reset or delete waits for the job running on it)."""
        with self.cv:
            while key in self.busy:
                self.cv.wait()
            self.busy.add(key)
        try:
            yield
        finally:
            with self.cv:
                self.busy.discard(key)
                self.cv.notify_all()

    def stop(self) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
