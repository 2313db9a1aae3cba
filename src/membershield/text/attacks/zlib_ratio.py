"""zlib ratio: log-perplexity relative to the text's zlib-compressed size.

Carlini et al. 2021, "Extracting Training Data from Large Language Models" (USENIX Security), Section
6.1: a text the model finds likely but zlib cannot compress well (it is not merely repetitive) is
suspicious. The paper ranks by ``log-perplexity / zlib entropy`` (low = memorised); here the score is its
negative, so higher = more likely member. zlib entropy is the length in bytes of the compressed UTF-8 text.
"""

from __future__ import annotations

import zlib

import numpy as np

from membershield.text.attacks.base import TextAttack, TextAttackInputs


def zlib_entropy(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


class ZlibRatioAttack(TextAttack):
    name = "zlib"
    title = "zlib ratio"
    citation = "Carlini et al. Extracting Training Data from Large Language Models. USENIX Security 2021."

    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        sizes = np.array([zlib_entropy(t) for t in inputs.texts], dtype=np.float64)
        return -inputs.target.mean_nll() / sizes
