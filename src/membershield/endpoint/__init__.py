"""Audits of a model behind an API: the wire formats, the HTTP client with its budget, rate and retries,
the on-disk cache of answers, and what access the answers give."""
