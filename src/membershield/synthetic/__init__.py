"""Synthetic-data audits (``membershield audit-synthetic``): does a synthetic table leak the real records
it was made from?

Members are the generator's training records, non-members real records it never saw; membership attacks
on the synthetic records (:mod:`.attacks`: DCR, NNDR, DOMIAS, a model trained on them, shadow
generators) are measured with the metrics of every audit, next to the DCR risk (:mod:`.dcr_risk`) and
anonymeter's singling-out, linkability and inference risks (:mod:`.anonymeter_risks`). The workflow is
:func:`.audit.run_synthetic_audit`.
"""
