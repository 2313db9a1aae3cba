"""Membership inference against diffusion models: is this image one a DDPM was trained on?

:mod:`.audit` runs the audit kind (``membershield audit-diffusion``): a diffusers DDPM folder
(:mod:`.model`), member and non-member images (:mod:`.images`), the attacks of :mod:`.attacks` on
batched noise estimates, and the metrics, result, reports, gate and history every audit shares. Needs
the ``diffusion`` extra (``diffusers``); nothing here imports it until a model is loaded.
"""

from __future__ import annotations

from membershield.diffusion.audit import DiffusionAuditConfig, run_diffusion_audit

__all__ = ["DiffusionAuditConfig", "run_diffusion_audit"]
