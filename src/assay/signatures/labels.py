"""Cluster labels from class-based TF-IDF (c-TF-IDF).

c-TF-IDF (Grootendorst 2022, "BERTopic: Neural topic modeling with a class-based TF-IDF
procedure", arXiv:2203.05794) treats all documents of one cluster as one document and
weights term ``t`` in class ``c`` as::

    W(t, c) = tf(t, c) * log(1 + A / f(t))

where ``tf(t, c)`` is the frequency of ``t`` in class ``c``, ``f(t)`` its frequency across
all classes and ``A`` the average number of words per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

TEMPLATE_WORDS = frozenset({
    "id", "num", "date", "time", "email", "failing", "step", "final", "answer", "context", "tool_call",
    "tool_result", "assistant", "user", "error", "failed", "ended", "tool", "without", "calling",
    "ll", "ve", "re", "don", "didn", "doesn", "isn", "won", "wasn", "aren", "couldn", "shouldn",
})
"""Words of the key-text template, the error masks and contractions; never keywords."""

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


def make_label(key_words: str, keywords: Sequence[str], n: int = 4) -> str:
    """A signature label: the dominant structural key in words, then the top ``n`` keywords
    not already in it, e.g. ``book_reservation failed: payment amount does not add up [total, think]``."""
    words = set(key_words.lower().replace(":", " ").split())
    extra = [k for k in keywords if k not in words][:n]
    return f"{key_words} [{', '.join(extra)}]" if extra else key_words
