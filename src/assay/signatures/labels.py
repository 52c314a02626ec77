"""Signature labels that read as a failure, with keywords from class-based TF-IDF (c-TF-IDF).

A label (:func:`make_label`) says what went wrong, then where, then what it is about: the
members' leading failure signal in words, the common structural key in words, and two
c-TF-IDF keywords not already in it, e.g. ``tool error: book_reservation failed: payment
amount does not add up, about total, paid``. Two live signatures never share key and label:
:func:`distinct_label` adds keywords until the label is free.

c-TF-IDF (Grootendorst 2022, "BERTopic: Neural topic modeling with a class-based TF-IDF
procedure", arXiv:2203.05794) treats all documents of one cluster as one document and
weights term ``t`` in class ``c`` as::

    W(t, c) = tf(t, c) * log(1 + A / f(t))

where ``tf(t, c)`` is the frequency of ``t`` in class ``c``, ``f(t)`` its frequency across
all classes and ``A`` the average number of words per class.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

from assay.signatures.cluster import Cluster
from assay.signatures.evidence import SIGNAL_WORDS, signal_words
from assay.signatures.keys import StructuralKey

TEMPLATE_WORDS = frozenset({
    "id", "num", "date", "time", "email", "failing", "step", "final", "answer", "context", "tool_call",
    "tool_result", "assistant", "user", "error", "failed", "ended", "tool", "without", "calling",
    "ll", "ve", "re", "don", "didn", "doesn", "isn", "won", "wasn", "aren", "couldn", "shouldn", "hasn", "haven",
    "hadn", "weren", "wouldn", "mustn", "needn", "mightn", "shan",
    "call", "result", "how", "stated", "source", "agent",
    *(word for words in SIGNAL_WORDS.values() for word in words.split()),
})
"""Words of the key-text and failure-text templates (signal kinds in words among them), the error
masks and contractions; never keywords."""

STOP_WORDS = sorted(ENGLISH_STOP_WORDS | TEMPLATE_WORDS)


def class_tfidf(documents: Sequence[str], classes: Sequence[int], top_n: int = 8) -> dict[int, list[str]]:
    """Top keywords per class by c-TF-IDF (see module docstring).

    Args:
        documents: one text per unit.
        classes: the class of each document (a cluster id; noise may be its own class: it
            then takes part in ``f(t)`` and ``A`` like any other class).
        top_n: keywords kept per class.

    Returns:
        ``{class: [keyword, ...]}``, best first; terms with zero weight are left out.
    """
    labels = sorted(set(classes))
    joined = [" ".join(d for d, c in zip(documents, classes, strict=True) if c == label) for label in labels]
    vectorizer = CountVectorizer(stop_words=STOP_WORDS, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z_]+\b")
    try:
        counts = vectorizer.fit_transform(joined).toarray().astype(float)
    except ValueError:  # every word is a stop word
        return {label: [] for label in labels}
    terms = vectorizer.get_feature_names_out()
    avg_words = counts.sum() / len(labels)
    weights = counts * np.log1p(avg_words / counts.sum(axis=0))
    out: dict[int, list[str]] = {}
    for row, label in enumerate(labels):
        order = np.lexsort((terms, -weights[row]))
        out[label] = [str(terms[j]) for j in order[:top_n] if weights[row, j] > 0]
    return out


LABEL_KEYWORDS = 2
"""Keywords a label names after the failure (more only to tell two signatures apart)."""


def make_label(key: StructuralKey, keywords: Sequence[str], lead: str | None = None, n: int = LABEL_KEYWORDS) -> str:
    """A signature label that reads as a failure (see module docstring).

    Args:
        key: the members' common key (:func:`~assay.signatures.cluster.common_key`).
        keywords: c-TF-IDF keywords, best first.
        lead: the signal kind most members' failure text starts with (None: no majority, or
            no signals): said first, in words (:data:`~assay.signatures.evidence.SIGNAL_WORDS`).
        n: keywords named, those already in the label skipped.

    Returns:
        e.g. ``user frustrated: ended after exchange_delivered_order_items without a tool error,
        about exchange, refund``.
    """
    head = readable(f"{signal_words(lead)}: {key.words}" if lead else key.words)
    words = set(head.lower().replace(":", " ").replace(",", " ").split())
    extra = [k for k in keywords if k not in words][:n]
    return f"{head}, about {', '.join(extra)}" if extra else head


_READABLE = {"<NUM>": "N", "<ID>": "ID", "<DATE>": "DATE", "<TIME>": "TIME", "<EMAIL>": "EMAIL"}


def readable(text: str) -> str:
    """A key's masked parts as words a reader takes in (``"total price is <NUM>"`` -> ``"total price is N"``);
    the stored key keeps the masks (:func:`~assay.signatures.keys.mask_variables`)."""
    for mask, word in _READABLE.items():
        text = text.replace(mask, word)
    return text


def distinct_label(key: StructuralKey, keywords: Sequence[str], lead: str | None, taken: Collection[str],
                   n: int = LABEL_KEYWORDS) -> str | None:
    """The first of :func:`make_label` with ``n``, ``n + 1``, ... keywords that is not in
    ``taken`` (labels of other signatures with the same key); None when all of them are."""
    for count in range(n, max(n, len(keywords)) + 1):
        label = make_label(key, keywords, lead, count)
        if label not in taken:
            return label
    return None


def name_clusters(clusters: Sequence[Cluster]) -> list[tuple[int, int]]:
    """Set each cluster's ``label``, in order (largest first), to a :func:`distinct_label` no
    earlier cluster with the same key has.

    Returns:
        ``(later, earlier)`` index pairs of clusters that no label tells apart (same key, same
        keywords): the later one is left unlabelled, for the caller to merge into the earlier.
    """
    owner: dict[str, dict[str, int]] = defaultdict(dict)
    merges = []
    for n, cluster in enumerate(clusters):
        same_key = owner[cluster.key.text]
        label = distinct_label(cluster.key, cluster.keywords, cluster.lead, same_key)
        if label is None:
            merges.append((n, same_key[make_label(cluster.key, cluster.keywords, cluster.lead)]))
        else:
            cluster.label = label
            same_key[label] = n
    return merges
