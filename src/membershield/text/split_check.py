"""The split check for text: can a classifier that never queries the model tell members from non-members?

The same method as :func:`membershield.split_check.blind_split_check`, on surface features of the texts:
word 1–2-gram TF-IDF, length in characters, words and tokens, and counts of digits and date-like strings.
It trains on a random stratified half and is scored on the other half; the alarm is raised when the
lower end of the 99% DeLong interval of its AUC is above 0.5. Published LLM membership benchmarks whose
members and non-members come from different time periods are separated by exactly such features (Duan et
al. 2024, "Do Membership Inference Attacks Work on Large Language Models?"; Das et al. 2024, "Blind
Baselines Beat Membership Inference Attacks for Foundation Models").
"""

from __future__ import annotations

import re

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from membershield.split_check import SplitCheck

_DATE = re.compile(
    r"\b(?:1[5-9]\d\d|20\d\d)\b"  # a year
    r"|\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b"  # 2024-05-01, 01/05/24
    r"|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}\b",  # May 1
    re.IGNORECASE,
)


def surface_features(texts: list[str], n_tokens: np.ndarray | None = None) -> np.ndarray:
    """Numeric features per text: log lengths (chars, words, tokens) and digit and date counts."""
    chars = np.array([len(t) for t in texts], dtype=np.float64)
    words = np.array([len(t.split()) for t in texts], dtype=np.float64)
    digits = np.array([sum(c.isdigit() for c in t) for t in texts], dtype=np.float64)
    dates = np.array([len(_DATE.findall(t)) for t in texts], dtype=np.float64)
    columns = [np.log1p(chars), np.log1p(words), np.log1p(digits), dates, digits / np.maximum(chars, 1.0)]
    if n_tokens is not None:
        columns.append(np.log1p(np.asarray(n_tokens, dtype=np.float64)))
    return np.column_stack(columns)


def text_split_check(
    texts: list[str],
    is_member: np.ndarray,
    n_tokens: np.ndarray | None = None,
    seed: int = 0,
    confidence: float = 0.99,
) -> SplitCheck:
    """Held-out AUC of a blind classifier predicting membership from the texts alone; see module docs."""
    y = np.asarray(is_member, dtype=bool)
    n_members, n_nonmembers = int(y.sum()), int((~y).sum())
    if min(n_members, n_nonmembers) < 4:
        return SplitCheck(0.5, 0.0, 1.0, True, n_members, n_nonmembers, confidence, "too few records to check")
    numeric = surface_features(texts, n_tokens)
    index = np.arange(len(texts))
    fit, test = train_test_split(index, test_size=0.5, stratify=y, random_state=seed)
    vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=50_000)
    scaler = StandardScaler()
    X_fit = hstack([vectoriser.fit_transform([texts[i] for i in fit]), csr_matrix(scaler.fit_transform(numeric[fit]))])
    X_test = hstack([vectoriser.transform([texts[i] for i in test]), csr_matrix(scaler.transform(numeric[test]))])
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit(X_fit.tocsr(), y[fit])
    return SplitCheck.from_held_out(
        model.predict_proba(X_test.tocsr())[:, 1],
        y[test],
        n_members,
        n_nonmembers,
        confidence,
        (
            "logistic regression on word 1-2-gram TF-IDF, lengths (chars, words, tokens), digit and date counts;"
            " trained on a random half, scored on the other"
        ),
    )
