"""Guard: an ASGI service in front of a deployed model.

It authenticates callers by API key, applies per-key rate limits and daily query budgets, hardens every
answer with the output defenses of :mod:`membershield.defenses.output`, watches each key's queries for
membership-probing patterns (:mod:`.detector`), redacts personal data from text outputs (:mod:`.pii`),
logs every request and alert to the history store and serves Prometheus metrics and a dashboard.
"""

from membershield.guard.policy import GuardPolicy, load_policy

__all__ = ["GuardPolicy", "load_policy"]
