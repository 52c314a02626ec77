"""Background jobs of the app (a calibration, a worker pass): each runs in a thread of its own, so the request
that starts it returns at once, and its progress is read back by polling (``GET /jobs/{id}``, htmx).

Jobs live in the process that started them (one ``assay serve``): a restart forgets them, while what they
wrote (scores, calibration reports, audit records) stays in the store. One job per key runs at a time
(starting it again returns the running one).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from fastapi import Request

JobState = Literal["running", "done", "failed"]
KEEP = 50
"""Finished jobs remembered (the oldest are forgotten first)."""


@dataclass
class Job:
    """One background job: what it is, who started it, how far it got and how it ended.

    Attributes:
        key: what it works on (one job per key at a time), e.g. ``calibrate:refunds-judge``.
        title: a line for people.
        link: the page that shows its result.
        total: units of work (None: unknown); ``done`` counts them.
        message: the outcome in words when finished (or the error).
    """

    id: str
    key: str
    title: str
    started_by: str
    link: str
    total: int | None = None
    done: int = 0
    state: JobState = "running"
    message: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units of work done (the progress callback of ``calibrate``, ``evaluate_many``)."""
        self.done += n

    @property
    def running(self) -> bool:
        return self.state == "running"


class Jobs:
    """The jobs of one app (thread-safe)."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, key: str, title: str, who: str, link: str, work: Callable[[Job], str],
              total: int | None = None) -> Job:
        """Run ``work(job)`` in a daemon thread; its return value becomes the job's message, an exception
        makes it ``failed`` with the error as the message. A job already running on ``key`` is returned instead."""
        with self._lock:
            for job in self._jobs.values():
                if job.key == key and job.running:
                    return job
            job = Job(id=secrets.token_urlsafe(8), key=key, title=title, started_by=who, link=link, total=total)
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if not j.running]
            for old in finished[:max(0, len(finished) - KEEP)]:
                del self._jobs[old.id]
        threading.Thread(target=self._run, args=(job, work), name=f"assay-job-{job.id}", daemon=True).start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], str]) -> None:
        try:
            job.message = work(job)
            job.state = "done"
        except Exception as exc:  # a job's failure is shown on its page, never lost
            job.message = f"{type(exc).__name__}: {exc}"
            job.state = "failed"
        finally:
            job.finished_at = datetime.now(UTC)

    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown (or forgotten)."""
        with self._lock:
            return self._jobs.get(job_id)


def jobs_of(request: Request) -> Jobs:
    """The app's background jobs (``install_ui`` puts them on the app state)."""
    jobs: Jobs = request.app.state.assay_jobs
    return jobs
