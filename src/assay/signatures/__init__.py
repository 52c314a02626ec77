"""Failure signatures: structural keys, embeddings, clustering, labels, impact ranking.

Stage 2 of the loop: failed units are keyed (failed tool + error type), embedded
(all-MiniLM-L6-v2, offline, cached), clustered with HDBSCAN, labelled by c-TF-IDF and
ranked by share of failed units; experts then review a representative sample per signature.

    sigs = build_signatures(store, settings)
    queue = sample_queue(store, sigs[0].id, size=10)
"""

from assay.signatures.cluster import MATCH_THRESHOLD, build_signatures, failed_unit_ids
from assay.signatures.embeddings import embed_texts, embed_units, load_encoder
from assay.signatures.keys import StructuralKey, error_type, key_text, normalize_error, structural_key
from assay.signatures.labels import class_tfidf
from assay.signatures.listing import list_signatures, map_points, signature_members
from assay.signatures.model import EmbeddingStats, Signature, SignatureStatus
from assay.signatures.sample import sample_queue

__all__ = [
    "MATCH_THRESHOLD", "EmbeddingStats", "Signature", "SignatureStatus", "StructuralKey", "build_signatures",
    "class_tfidf", "embed_texts", "embed_units", "error_type", "failed_unit_ids", "key_text", "list_signatures",
    "load_encoder", "map_points", "normalize_error", "sample_queue", "signature_members", "structural_key",
]
