"""Accounts, API keys, session cookies and CSRF tokens of the annotation app.

Passwords are hashed with Argon2id (``argon2-cffi``); API keys are random 32-byte tokens of
which only the SHA-256 is stored. The session cookie is an ``itsdangerous``-signed
``{"user": name, "csrf": token}``; every form carries the session's CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import AccountRow, ApiKeyRow, utcnow
from assay.exceptions import NotFoundError, UsageError

Role = Literal["admin", "annotator"]
ROLES: tuple[Role, ...] = ("admin", "annotator")
SESSION_COOKIE = "assay_session"
SESSION_MAX_AGE_S = 12 * 3600
KEY_PREFIX = "assay_"

_hasher = PasswordHasher()


@dataclass(frozen=True)
class Account:
    """A person who may log in: name and role (admins also edit criteria and adjudicate)."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def add_user(store: Store, name: str, password: str, role: Role = "annotator") -> Account:
    """Create an account, or reset the password and role of an existing one.

    Raises:
        UsageError: empty name, password shorter than 8 characters, or unknown role.
    """
    if not name.strip():
        raise UsageError("user name is empty")
    if len(password) < 8:
        raise UsageError("password must have at least 8 characters")
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}: use admin or annotator")
    digest = _hasher.hash(password)
    with store.session() as s:
        row = s.get(AccountRow, name.strip())
        if row is None:
            s.add(AccountRow(name=name.strip(), role=role, password_hash=digest))
        else:
            row.role, row.password_hash = role, digest
    return Account(name=name.strip(), role=role)


def list_users(store: Store) -> list[Account]:
    """All accounts, by name."""
    with store.session() as s:
        return [Account(r.name, r.role) for r in s.scalars(select(AccountRow).order_by(AccountRow.name))]  # type: ignore[arg-type]


def authenticate(store: Store, name: str, password: str) -> Account | None:
    """The account when the password matches, else None (same answer for an unknown name)."""
    with store.session() as s:
        row = s.get(AccountRow, name)
        if row is None:
            _hasher.hash(password)  # spend the same time as a real check
            return None
        try:
            _hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if _hasher.check_needs_rehash(row.password_hash):
            row.password_hash = _hasher.hash(password)
        return Account(row.name, row.role)  # type: ignore[arg-type]


def get_user(store: Store, name: str) -> Account:
    """Raises: NotFoundError: no such account."""
    with store.session() as s:
        row = s.get(AccountRow, name)
        if row is None:
            raise NotFoundError("user", name)
        return Account(row.name, row.role)  # type: ignore[arg-type]


def create_api_key(store: Store, owner: str = "", env: str | None = None) -> str:
    """Create an API key and return it (shown once; only its SHA-256 is stored).

    Args:
        owner: who or what uses it (a note).
        env: bind the key to an environment: the OTLP receiver gives units sent with it this
            environment when their resource names none (``deployment.environment.name``).

    Raises:
        UsageError: an empty or over-long environment name.
    """
    if env is not None and not (0 < len(env.strip()) <= 100):
        raise UsageError("--env takes an environment name of 1 to 100 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.session() as s:
        s.add(ApiKeyRow(prefix=key[:12], key_hash=hashlib.sha256(key.encode()).hexdigest(), owner=owner,
                        env=env.strip() if env else None))
    return key


@dataclass(frozen=True)
class ApiKeyInfo:
    """What is known of a stored key: its first 12 characters, owner note, dates (UTC) and bound environment."""

    prefix: str
    owner: str
    created_at: datetime
    revoked_at: datetime | None
    env: str | None = None


def _info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(row.prefix, row.owner, row.created_at, row.revoked_at, row.env)


def list_api_keys(store: Store) -> list[ApiKeyInfo]:
    """Every API key ever created, oldest first (the key itself is never stored)."""
    with store.session() as s:
        rows = s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))
        return [_info(r) for r in rows]


def revoke_api_key(store: Store, prefix: str) -> int:
    """Revoke the one unrevoked key whose stored 12-character prefix starts with ``prefix`` (a
    whole key works too); returns 1. Requests with it get 401 from then on.

    Raises:
        UsageError: ``prefix`` is shorter than 8 characters or matches more than one key.
        NotFoundError: no unrevoked key matches.
    """
    if len(prefix) < 8:
        raise UsageError("give at least the first 8 characters of the key (see `assay keys list`)")
    with store.session() as s:
        rows = list(s.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))))
        hits = [r for r in rows if r.prefix.startswith(prefix[:12])]
        if not hits:
            raise NotFoundError("API key", prefix)
        if len(hits) > 1:
            raise UsageError(f"{prefix!r} matches {len(hits)} keys: give more characters")
        hits[0].revoked_at = utcnow()
        return 1


def has_api_keys(store: Store) -> bool:
    """True when the store holds at least one unrevoked API key."""
    with store.session() as s:
        return s.scalar(select(ApiKeyRow.id).where(ApiKeyRow.revoked_at.is_(None)).limit(1)) is not None


def check_api_key(store: Store, key: str) -> bool:
    """True when ``key`` is a stored, unrevoked API key."""
    return stored_api_key(store, key) is not None


def stored_api_key(store: Store, key: str) -> ApiKeyInfo | None:
    """The stored, unrevoked API key ``key`` (its prefix, owner, bound environment), else None."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    with store.session() as s:
        row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
        return _info(row) if row is not None and row.revoked_at is None else None


class SessionCodec:
    """Signs and reads the session cookie ``{"user": name, "csrf": token}``.

    Args:
        secret: the signing secret (settings ``session_secret``; a random one per process
            when unset, so a restart logs everyone out).
    """

    def __init__(self, secret: str | None) -> None:
        self._serializer = URLSafeTimedSerializer(secret or secrets.token_urlsafe(32), salt="assay-session")

    def dump(self, user: str) -> str:
        """A new signed session for ``user`` with a fresh CSRF token."""
        return self._serializer.dumps({"user": user, "csrf": secrets.token_urlsafe(24)})

    def load(self, cookie: str | None) -> dict[str, str] | None:
        """The session, or None when missing, forged or older than ``SESSION_MAX_AGE_S``."""
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("user"), str):
            return None
        return {"user": data["user"], "csrf": str(data.get("csrf", ""))}


def csrf_ok(session: dict[str, str], token: str | None) -> bool:
    """True when the form's token equals the session's (constant-time)."""
    return bool(token) and hmac.compare_digest(session.get("csrf", ""), token or "")
