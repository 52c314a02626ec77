"""Judge calls that survive real APIs: retries with exponential backoff honouring ``Retry-After``,
requests/min and tokens/min limits, per-call token, latency and cost accounting, and a circuit breaker
that stops a run when the judge is unreachable.

:class:`ResilientJudge` wraps any :class:`~assay.models.JudgeClient`; bounded concurrency is
the caller's (``evaluate_many(..., concurrency=16)`` runs a thread pool). Backoff follows the
usual capped exponential schedule (``backoff_s * 2**(attempt-1)``, at most ``max_backoff_s``)
unless the server says when to come back (RFC 9110 section 10.2.3 ``Retry-After``: seconds or
an HTTP date), which is then obeyed.

The **circuit breaker** (:class:`CircuitBreaker`, ``[judge] breaker_after``, default 5) counts connection
failures in a row, retries included: a call that got no HTTP answer at all (connection refused or reset,
DNS, a timeout). Any answer (a reply, an HTTP error status) resets it. At ``breaker_after`` it opens: the
call raises :class:`~assay.exceptions.JudgeUnreachable`, naming the URL and model, and so does every call
after it without touching the network, so a batch stops at once instead of retrying unit after unit
(before it, a gate against a dead judge took 213.6 s to fail). After ``cooldown_s`` one call is let through
again (half-open): an answer closes the breaker, a failure opens it again at once. A long-running worker
thus recovers when the judge comes back; a CLI run has ended with exit 3 by then. An HTTP 404 is no
network failure but stops a run just as surely: the clients raise :class:`~assay.exceptions.JudgeNotFound`
(a ``JudgeUnreachable``) at the first one (:func:`status_error`), since a wrong ``base_url`` path or model
answers every call the same way.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

from assay.exceptions import JudgeError, JudgeNotFound, JudgeUnreachable
from assay.models.base import ChatMessage, HasParameters, JudgeClient, JudgeReply


class TransientJudgeError(JudgeError):
    """A judge call that may succeed when tried again: HTTP 408/409/429/5xx, a timeout, a dropped connection.

    Attributes:
        status: the HTTP status, None for a timeout or connection error.
        retry_after: seconds the server asked to wait (``Retry-After``), None when it did not say.
        attempts: calls made before giving up (set by :class:`ResilientJudge`).
    """

    def __init__(self, message: str, model: str = "", status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, model)
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def judge_target(model: str, url: str) -> str:
    """How every message names a judge: ``judge MODEL at URL``."""
    return f"judge {model} at {url}"


def status_error(message: str, model: str, url: str, status: int) -> JudgeError:
    """The error of an HTTP status not worth a retry: 404 is :class:`~assay.exceptions.JudgeNotFound` (a wrong
    ``base_url`` path or model: every call would get it, so the run stops), any other a plain ``JudgeError``."""
    if status == HTTPStatus.NOT_FOUND:
        return JudgeNotFound(url, model, message.removeprefix(judge_target(model, url) + ": "))
    return JudgeError(message, model)


def judge_endpoint(judge: object) -> str:
    """The URL a judge client calls: its ``endpoint`` (API clients), else its ``base_url`` parameter, else a
    placeholder saying it is unknown."""
    endpoint = getattr(judge, "endpoint", None)
    if isinstance(endpoint, str) and endpoint:
        return endpoint
    params = getattr(judge, "parameters", None)
    base = params.get("base_url") if isinstance(params, Mapping) else None
    return str(base) if base else "its default endpoint"


class CircuitBreaker:
    """Opens after ``after`` connection failures in a row (see the module docstring); thread-safe.

    Args:
        after: failures in a row that open it (0: never).
        url, model: named in the :class:`~assay.exceptions.JudgeUnreachable` it raises.
        cooldown_s: seconds it stays open before letting one call through again.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, after: int, url: str, model: str, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.after, self.url, self.model, self.cooldown_s = after, url, model, cooldown_s
        self._clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._last = ""
        self._lock = threading.Lock()

    def _error(self) -> JudgeUnreachable:
        return JudgeUnreachable(self.url, self.model, self.failures, self._last)

    def before_call(self) -> None:
        """Raises JudgeUnreachable while open; after the cooldown lets calls through (one more failure reopens)."""
        with self._lock:
            if self._opened_at is None:
                return
            if self._clock() - self._opened_at < self.cooldown_s:
                raise self._error()
            self._opened_at, self.failures = None, self.after - 1  # half-open

    def answered(self) -> None:
        """The judge answered (a reply or an HTTP error): the endpoint is reachable."""
        with self._lock:
            self.failures, self._opened_at = 0, None

    def failed(self, error: TransientJudgeError) -> None:
        """Count a failed attempt: one with an HTTP status is an answer; one without counts.

        Raises:
            JudgeUnreachable: this failure opened the breaker.
        """
        if error.status is not None:
            self.answered()
            return
        with self._lock:
            self.failures += 1
            self._last = str(error).removeprefix(judge_target(self.model, self.url) + ": ")
            if self.after and self.failures >= self.after:
                self._opened_at = self._clock()
                raise self._error()


class RateLimiter:
    """Requests/min and tokens/min limits over a sliding 60 s window, shared by threads.

    Args:
        rpm: requests per minute (None: unlimited).
        tpm: tokens per minute, input + output (None: unlimited). A call is admitted on its
            estimated tokens and charged its actual tokens afterwards.
        clock, sleep: injectable for tests (seconds, monotonic).
    """

    def __init__(self, rpm: int | None = None, tpm: int | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._clock, self._sleep = clock, sleep
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def _wait_needed(self, now: float, tokens: int) -> float:
        while self._requests and now - self._requests[0] >= 60:
            self._requests.popleft()
        while self._tokens and now - self._tokens[0][0] >= 60:
            self._tokens.popleft()
        wait = 0.0
        if self.rpm is not None and len(self._requests) >= self.rpm:
            wait = max(wait, 60 - (now - self._requests[0]))
        if self.tpm is not None and self._tokens:
            used = sum(t for _, t in self._tokens)
            if used + tokens > self.tpm:
                wait = max(wait, 60 - (now - self._tokens[0][0]))
        return wait

    def acquire(self, tokens: int = 0) -> None:
        """Block until a request of about ``tokens`` tokens fits both limits, then record it."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now, tokens)
                if wait <= 0:
                    self._requests.append(now)
                    if self.tpm is not None:
                        self._tokens.append((now, tokens))
                    return
            self._sleep(min(wait, 1.0))

    def charge(self, estimated: int, actual: int) -> None:
        """Correct the token window by the difference between estimated and actual tokens."""
        if self.tpm is not None and actual != estimated:
            with self._lock:
                self._tokens.append((self._clock(), actual - estimated))


@dataclass
class Usage:
    """What a :class:`ResilientJudge` spent (totals over its calls; thread-safe through its lock)."""

    calls: int = 0
    attempts: int = 0
    retried_calls: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    per_call: list[dict[str, Any]] = field(default_factory=list)


class ResilientJudge:
    """A judge with retries, backoff, rate limits and per-call accounting around another judge.

    Retries :class:`TransientJudgeError` up to ``max_retries`` times; other errors pass at once.
    The reply carries ``attempts`` and ``cost_usd`` (when prices are set: USD per million
    input / output tokens). ``usage`` sums all calls; ``usage.per_call`` keeps one record per
    call (attempts, tokens, latency in s, cost, error). ``breaker_after`` connection failures in a
    row (attempts counted) open the :class:`CircuitBreaker` (0: never).

    Raises (from :meth:`complete`):
        JudgeUnreachable: the breaker is open (the endpoint failed to connect ``breaker_after`` times in a row).
        JudgeError: a permanent failure, or a transient one after the last retry (``attempts`` set).
    """

    def __init__(self, inner: JudgeClient, max_retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 rpm: int | None = None, tpm: int | None = None, price_in_per_mtok: float | None = None,
                 price_out_per_mtok: float | None = None, sleep: Callable[[float], None] = time.sleep,
                 breaker_after: int = 5) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.breaker = CircuitBreaker(breaker_after, judge_endpoint(inner), inner.model_name)
        self.limiter = RateLimiter(rpm, tpm)
        self.prices = (price_in_per_mtok, price_out_per_mtok)
        self.usage = Usage()
        self._sleep = sleep
        self._lock = threading.Lock()

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The inner judge's generation parameters (retries and limits change no reply)."""
        return self.inner.parameters if isinstance(self.inner, HasParameters) else {}

    @property
    def endpoint(self) -> str:
        """The URL the inner judge calls."""
        return self.breaker.url

    def delay(self, attempt: int, error: TransientJudgeError) -> float:
        """Seconds to wait before attempt ``attempt + 1``: the server's ``Retry-After`` or capped 2^n backoff."""
        if error.retry_after is not None:
            return min(error.retry_after, self.max_backoff_s)
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        """Call the inner judge within the limits, retrying transient failures (see the class docstring)."""
        estimate = sum(len(m["content"]) for m in messages) // 4 + 200
        attempt = 0
        while True:
            attempt += 1
            self.breaker.before_call()
            self.limiter.acquire(estimate)
            try:
                reply = self.inner.complete(messages, json_schema)
            except TransientJudgeError as exc:
                self._count(exc, attempt)
                if attempt > self.max_retries:
                    exc.attempts = attempt
                    self._record(attempt, None, str(exc))
                    raise
                self._sleep(self.delay(attempt, exc))
                continue
            except JudgeError as exc:
                self.breaker.answered()
                self._record(attempt, None, str(exc))
                raise
            self.breaker.answered()
            tokens = (reply.input_tokens or 0) + (reply.output_tokens or 0)
            self.limiter.charge(estimate, tokens)
            cost = self._cost(reply)
            reply = reply.model_copy(update={"attempts": attempt, "cost_usd": cost})
            self._record(attempt, reply, None)
            return reply

    def _count(self, exc: TransientJudgeError, attempt: int) -> None:
        """Tell the breaker about a failed attempt; when it opens, record the call and raise."""
        try:
            self.breaker.failed(exc)
        except JudgeUnreachable:
            self._record(attempt, None, str(exc))
            raise

    def _cost(self, reply: JudgeReply) -> float | None:
        p_in, p_out = self.prices
        if p_in is None or p_out is None or reply.input_tokens is None or reply.output_tokens is None:
            return None
        return (reply.input_tokens * p_in + reply.output_tokens * p_out) / 1e6

    def _record(self, attempts: int, reply: JudgeReply | None, error: str | None) -> None:
        with self._lock:
            u = self.usage
            u.calls += 1
            u.attempts += attempts
            u.retried_calls += attempts > 1
            u.failed_calls += reply is None
            record: dict[str, Any] = {"attempts": attempts, "error": error}
            if reply is not None:
                u.input_tokens += reply.input_tokens or 0
                u.output_tokens += reply.output_tokens or 0
                u.latency_s += reply.latency_s
                u.cost_usd += reply.cost_usd or 0.0
                record.update(input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                              latency_s=reply.latency_s, cost_usd=reply.cost_usd)
            u.per_call.append(record)
