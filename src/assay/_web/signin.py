"""Sign-in throttling of the annotation app, with every attempt in the audit record.

Failed sign-ins are counted per account name given (whether or not such an account exists, so the
answers never tell which names exist) and per client address, from the audit record
(:mod:`assay._store.audit`: ``signin.ok``, ``signin.failed``, ``signin.throttled``), so the count
survives restarts and is shared by every server process on one store.

After ``free`` failures an attempt must wait, doubling with each further failure (exponential backoff,
as RFC 8628's ``slow_down`` and most login throttles do): ``base_s * 2 ** (failures - free)`` seconds,
at most ``cap_s``, counted from the last failure. An attempt made too early is refused without
checking the password (HTTP 429 with ``Retry-After``) and recorded as ``signin.throttled``, which
does not count as a failure. Per account the failures since its last successful sign-in count; per
client address every failure of the last ``window`` counts, with a larger allowance (several people
may share an address). The client address is the connection's peer (behind a reverse proxy: the
proxy's, unless the server runs with ``--proxy-headers`` and the proxy sets ``X-Forwarded-For``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from assay._store import Store
from assay._store.audit import AuditEntry, list_audit, record_audit

OK, FAILED, THROTTLED = "signin.ok", "signin.failed", "signin.throttled"


@dataclass(frozen=True)
class Backoff:
    """How many failures are free and how the wait grows after them (seconds)."""

    free: int
    base_s: float = 1.0
    cap_s: float = 300.0

    def wait_s(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures: 0 up to ``free``, then doubling from ``base_s``, at
        most ``cap_s``."""
        if failures < self.free:
            return 0.0
        return min(self.cap_s, self.base_s * 2.0 ** min(failures - self.free, 30))


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass
class SignInThrottle:
    """The sign-in throttle (see the module docstring).

    Args:
        account: backoff per account name given (default: 3 free failures, then 1 s, 2 s, 4 s ... 5 min).
        address: backoff per client address (default: 10 free failures).
        window: failures older than this are forgotten.
        clock: the current time (UTC); tests pass their own.
    """

    account: Backoff = field(default_factory=lambda: Backoff(free=3))
    address: Backoff = field(default_factory=lambda: Backoff(free=10))
    window: timedelta = timedelta(hours=1)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def _failures(self, entries: list[AuditEntry]) -> list[datetime]:
        """Failure times, newest first, up to the newest success."""
        out = []
        for e in entries:  # newest first
            if e.action == OK:
                break
            if e.action == FAILED:
                out.append(_utc(e.at))
        return out

    def _remaining(self, backoff: Backoff, failures: list[datetime], now: datetime) -> float:
        wait = backoff.wait_s(len(failures))
        if not wait:
            return 0.0
        return max(0.0, wait - max(0.0, (now - failures[0]).total_seconds()))

    def retry_after_s(self, store: Store, name: str, client: str | None) -> int:
        """Whole seconds before ``name`` may try again from ``client`` (0: now)."""
        now = self.clock()
        since = now - self.window
        by_name = self._failures(list_audit(store, (OK, FAILED), target=name, since=since, limit=200))
        wait = self._remaining(self.account, by_name, now)
        if client is not None:
            by_address = [_utc(e.at) for e in list_audit(store, (FAILED,), client=client, since=since, limit=200)]
            wait = max(wait, self._remaining(self.address, by_address, now))
        return math.ceil(wait)

    def record(self, store: Store, name: str, client: str | None, action: str, details: dict[str, str] | None = None
               ) -> None:
        """Write one sign-in attempt to the audit record (``who`` and ``target`` are the name given)."""
        record_audit(store, name, action, name, dict(details or {}), client=client, at=self.clock())


def wait_message(seconds: int) -> str:
    """The words shown when a sign-in must wait (the same for every name: no account enumeration)."""
    unit = "second" if seconds == 1 else "seconds"
    return f"Too many failed sign-ins. Wait {seconds} {unit}, then try again."
