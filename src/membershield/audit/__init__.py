"""The audit: plan, train what is missing, query once, attack, measure, write.

Data flow (see docs/ARCHITECTURE.md): pool + target + recipe -> reference plan (:mod:`.prepare`) ->
target and reference logits, computed once and cached (:mod:`.model_outputs`) -> each attack's scores
-> metrics (:mod:`.measure`, shared by every audit kind) -> :class:`~membershield.result.AuditResult`
(:mod:`.assemble`) -> every artifact (:mod:`.outputs`). :mod:`.run` runs the stages; :mod:`.plan` stops
after the first. A recipe audit (the privacy game, :mod:`.recipe_game`, :mod:`.recipe_measure`,
:mod:`.recipe_run`) trains K models of a pipeline itself and pools their trials, with clustered intervals.
"""

from membershield.audit.measure import MeasureSettings, ProgressCallback, measure_scores, run_attacks
from membershield.audit.outputs import REPORTS, AuditRun, write_audit_outputs
from membershield.audit.plan import AuditPlan, plan_audit
from membershield.audit.prepare import PreparedAudit, prepare_audit
from membershield.audit.recipe_game import plan_recipe_audit, prepare_recipe_audit
from membershield.audit.recipe_run import run_recipe_audit
from membershield.audit.run import run_audit

__all__ = [
    "REPORTS",
    "AuditPlan",
    "AuditRun",
    "MeasureSettings",
    "PreparedAudit",
    "ProgressCallback",
    "measure_scores",
    "plan_audit",
    "plan_recipe_audit",
    "prepare_audit",
    "prepare_recipe_audit",
    "run_attacks",
    "run_audit",
    "run_recipe_audit",
    "write_audit_outputs",
]
