"""Failure signatures: structural keys, embeddings, clustering, labels, impact ranking,
incremental assignment and the rare-severe channel.

Stage 2 of the loop: failed units are keyed (failed tool, error type, workflow step,
retrieval miss, outcome), their failure-local text (failure signals and the steps around the
steps they point to) embedded (all-MiniLM-L6-v2, offline, cached), clustered in three passes
(HDBSCAN, noise within a cluster's radius joins it, leftover noise grouped by average linkage;
a unit like no other stays noise), labelled as a failure ("tool error: ... failed: ..., about
...", never two live signatures with the same key and label) and ranked by impact (units x
severity x recency); experts then review a representative sample per signature, and every
unit flagged severe in a queue of its own.

    sigs = build_signatures(store, settings)          # full build, ids kept across re-runs
    update = update_signatures(store, settings)       # later: assign new units, mark the rest new
    queue = sample_queue(store, sigs[0].id, size=10)
    order = review_order(store)                       # across signatures: one of each in turn
    inbox = severe_queue(store)
    changes = update_lifecycle(store, settings)       # new -> escalating -> ... -> resolved -> regressed
    flows = workflow_report(store)                    # where failures concentrate, every unit by workflow
    stop = unseen_modes(store)                        # chance the next failure shows a mode no criterion covers
"""

from assay.signatures.build import build_signatures, failed_unit_ids, update_signatures
from assay.signatures.cluster import MATCH_THRESHOLD
from assay.signatures.embeddings import embed_texts, embed_units, load_encoder
from assay.signatures.evidence import failure_text
from assay.signatures.keys import StructuralKey, error_type, key_text, normalize_error, structural_key
from assay.signatures.labels import class_tfidf
from assay.signatures.lifecycle import LifecycleChange, lifecycle_history, update_lifecycle
from assay.signatures.listing import list_signatures, map_points, new_units, signature_members
from assay.signatures.model import (
    EmbeddingStats,
    Lifecycle,
    SevereFlag,
    SevereItem,
    Signature,
    SignatureStatus,
    UpdateResult,
)
from assay.signatures.sample import review_order, sample_queue
from assay.signatures.severe import flag_unit, scan_severe, severe_queue
from assay.signatures.unseen import UnseenModes, unseen_modes
from assay.signatures.workflows import WorkflowReport, workflow_report

__all__ = [
    "MATCH_THRESHOLD", "EmbeddingStats", "Lifecycle", "LifecycleChange", "SevereFlag", "SevereItem", "Signature",
    "SignatureStatus", "StructuralKey", "UnseenModes", "UpdateResult", "WorkflowReport", "build_signatures",
    "class_tfidf", "embed_texts", "embed_units", "error_type", "failed_unit_ids", "failure_text", "flag_unit",
    "key_text", "lifecycle_history", "list_signatures", "load_encoder", "map_points", "new_units", "normalize_error",
    "review_order", "sample_queue", "scan_severe", "severe_queue", "signature_members", "structural_key",
    "unseen_modes", "update_lifecycle", "update_signatures", "workflow_report",
]
