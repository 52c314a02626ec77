"""A content-addressed judge cache in the store: same model, prompt, schema and parameters, same reply."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from assay._store.store import Store
from assay._store.tables import JudgeCacheRow, utcnow
from assay.models.base import ChatMessage, HasParameters, JudgeClient, JudgeReply


def cache_key(model: str, messages: list[ChatMessage], json_schema: dict[str, Any] | None,
              parameters: Mapping[str, Any]) -> str:
    """SHA-256 (64 hex chars) of the canonical JSON of everything that determines a reply."""
    payload = {"model": model, "messages": messages, "schema": json_schema, "parameters": dict(parameters)}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CachedJudge:
    """Wrap a judge with a cache in the store's ``judge_cache`` table.

    A hit returns the stored reply with ``cached=True`` and calls no model. Only
    successful calls are cached (a :class:`~assay.exceptions.JudgeError` passes through).
    The key covers the model name, the messages, the schema and the inner judge's
    ``parameters``: the fields of its :class:`~assay.models.identity.JudgeIdentity` (provider,
    base URL or model file, temperature, max_tokens, seed, ...); an inner judge that reports none is
    keyed by ``defaults`` (:func:`~assay.models.identity.settings_parameters` when built by
    :func:`~assay.models.make_judge`), so a changed endpoint or sampling setting never reads an old reply.

    A judge fixed behind the same name and endpoint cannot be told apart by any key: ``refresh=True``
    (``--refresh`` on ``assay calibrate`` and ``assay gate``) asks the model every time and replaces the
    stored replies.

    Attributes:
        inner: the wrapped judge.
        calls: model calls made through this wrapper (cache misses).
        hits: replies served from the cache.
    """

    def __init__(self, inner: JudgeClient, store: Store, defaults: Mapping[str, Any] | None = None,
                 refresh: bool = False) -> None:
        self.inner = inner
        self.store = store
        self.defaults = dict(defaults or {})
        self.refresh = refresh
        self.model_name = inner.model_name
        self.calls = 0
        self.hits = 0
        self._lock = threading.Lock()
        # one writer at a time from this process: concurrent SQLite writers get SQLITE_BUSY and sleep in
        # SQLite's busy handler (1, 2, 5, 10 ... ms), which stalls a batch's threads far longer than a queue here
        self._write_lock = threading.Lock()

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The inner judge's generation parameters (``defaults`` when it reports none)."""
        return self.inner.parameters if isinstance(self.inner, HasParameters) else self.defaults

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        """Return the cached reply for this request, or call the inner judge and store its reply.

        Raises:
            JudgeError: a cache miss whose model call failed.
        """
        key = cache_key(self.model_name, messages, json_schema, self.parameters)
        cached = None if self.refresh else self.lookup(key)
        if cached is not None:
            with self._lock:
                self.hits += 1
            return cached
        with self._lock:
            self.calls += 1
        reply = self.inner.complete(messages, json_schema)
        self.store_reply(key, reply)
        return reply

    def lookup(self, key: str) -> JudgeReply | None:
        """The cached reply under ``key`` (``cached=True``), None on a miss. One Core SELECT, no ORM session."""
        t = JudgeCacheRow.__table__
        with self.store.engine.connect() as conn:
            row = conn.execute(select(t.c.reply, t.c.model, t.c.input_tokens, t.c.output_tokens, t.c.latency_s)
                               .where(t.c.key == key)).first()
        if row is None:
            return None
        return JudgeReply(text=row.reply, model=row.model, input_tokens=row.input_tokens,
                          output_tokens=row.output_tokens, latency_s=row.latency_s, cached=True)

    def store_reply(self, key: str, reply: JudgeReply) -> None:
        """Insert a reply under ``key``; a row already there (a concurrent identical miss) is kept, or replaced
        when refreshing."""
        values = {"key": key, "model": reply.model, "reply": reply.text, "input_tokens": reply.input_tokens,
                  "output_tokens": reply.output_tokens, "latency_s": reply.latency_s, "created_at": utcnow()}
        dialect = self.store.engine.dialect.name
        stmt: Any
        if dialect in ("sqlite", "postgresql"):
            insert = (sqlite_insert if dialect == "sqlite" else pg_insert)(JudgeCacheRow).values(**values)
            fresh = {k: v for k, v in values.items() if k != "key"}
            stmt = (insert.on_conflict_do_update(index_elements=["key"], set_=fresh) if self.refresh
                    else insert.on_conflict_do_nothing())
        else:
            with self.store.session() as s:
                s.merge(JudgeCacheRow(**values))
            return
        with self._write_lock, self.store.engine.begin() as conn:
            conn.execute(stmt)
