"""Membership auditing of causal language models: text attacks, canary exposure, verbatim extraction.

Everything here that needs ``transformers`` imports it inside the function that uses it, so the
classifier audit runs without the ``text`` extra installed.

Modules:

- :mod:`~membershield.text.data` reads and writes JSONL records (one object per line, a text field).
- :mod:`~membershield.text.model` loads a local causal LM and its tokenizer and fingerprints the weights.
- :mod:`~membershield.text.scoring` computes per-token log-probabilities (and the mean and variance of
  the log-probability under each next-token distribution) once per model, batched and windowed.
- :mod:`~membershield.text.attacks` turns those into membership scores (higher = more likely member).
- :mod:`~membershield.text.audit` runs the attacks and measures them with :mod:`membershield.metrics`.
- :mod:`~membershield.text.canaries` inserts secret canaries and measures their exposure.
- :mod:`~membershield.text.extraction` checks whether greedy decoding reproduces records verbatim.
"""
