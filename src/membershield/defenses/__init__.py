"""Defenses: wrappers of targets (output hardening) and of recipes (training-time defenses)."""

from membershield.defenses.output import HardenedTarget, OutputPolicy, harden

__all__ = ["HardenedTarget", "OutputPolicy", "harden"]
