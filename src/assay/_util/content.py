"""Content ids of stored records, shared by the layers that write them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping


def signal_key(unit_id: str, kind: str, step: int | None, evidence: str, lineage: Mapping[str, object]) -> str:
    """Content id of a failure signal (sha256 hex, 32 chars) of unit, kind, step, evidence and lineage
    (its JSON form, ``type`` included): the same observation made twice has the same key.

    :attr:`assay.signals.FailureSignal.key` is this; the store computes it for the signals it writes
    itself (failed evaluator scores), so both agree.
    """
    body = json.dumps([unit_id, kind, step, evidence, dict(lineage)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()[:32]
