"""The child side of contained embedding: loads a sentence-transformers model and encodes texts.

Runs inside ``python -m assay._util.child_main`` (see :mod:`assay._util.child`), so a crash in
PyTorch's native kernels kills only this process. Vectors travel back as base64 float32 bytes.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np


class EncoderServer:
    """One loaded encoder; ``encode`` is called by the parent by name."""

    def __init__(self, config: dict[str, Any]) -> None:
        from assay.signatures.embeddings import load_encoder

        start = time.perf_counter()
        self.encoder = load_encoder(config["model"])
        self.batch = int(config.get("batch", 32))
        self.info = {"load_s": time.perf_counter() - start}

    def encode(self, texts: list[str]) -> dict[str, Any]:
        """Encode ``texts``: ``{"shape": [n, d], "b64": float32 little-endian bytes}`` (rows L2-normalized)."""
        from assay.signatures.embeddings import _memory_trimmer

        trim = _memory_trimmer()
        parts = []
        for start in range(0, len(texts), self.batch):
            chunk = texts[start:start + self.batch]
            parts.append(np.asarray(self.encoder.encode(chunk, batch_size=self.batch, normalize_embeddings=True,
                                                        show_progress_bar=False, convert_to_numpy=True),
                                    dtype="<f4"))
            trim()
        array = np.vstack(parts) if parts else np.zeros((0, 0), dtype="<f4")
        return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def serve(config: dict[str, Any]) -> EncoderServer:
    """Factory named in the child's init message."""
    return EncoderServer(config)


def decode(reply: dict[str, Any]) -> np.ndarray:
    """The float32 array of an :meth:`EncoderServer.encode` reply."""
    data = base64.b64decode(reply["b64"])
    return np.frombuffer(data, dtype="<f4").reshape(reply["shape"]).astype(np.float32)
