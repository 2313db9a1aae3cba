"""Lineage workflows: record which datasets an audit read, print a model's chain of datasets, list the
models that used a dataset, and check whether recorded files changed since.

A dataset is known by the content fingerprint the audit computed of its table
(:func:`membershield.data.pool.fingerprint_frame`), so re-fingerprinting the file at its recorded path
says whether it still holds what the model was trained or audited on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from membershield.errors import ConfigError, InputDataError
from membershield.store import AuditRecord, DatasetEntry, DatasetRecord, DatasetUse, Store, open_store

# Where an audit document names each table it fingerprinted: fingerprint key -> (role, config key).
SOURCES = {
    "members": ("trained", "train"),
    "nonmembers": ("audited", "holdout"),
    "population": ("population", "population"),
    "forgotten": ("forgotten", "forgotten"),
    "data": ("trained", "data"),  # a recipe audit's pool: every model trains on half of it
}
UNCHANGED, CHANGED, MISSING, UNREADABLE = "unchanged", "changed", "missing", "unreadable"


def _rows(document: Mapping[str, Any], key: str) -> int | None:
    """The file's row count: the audited records plus those dropped as overlap."""
    data = document.get("data") or {}
    dropped = data.get("overlap_dropped") or {}
    if key in ("members", "nonmembers") and isinstance(data.get(f"n_{key}"), int):
        return int(data[f"n_{key}"]) + int(dropped.get(f"n_{key}") or 0)
    if key == "population" and isinstance(data.get("n_population"), int):
        return int(data["n_population"])
    if key == "forgotten":
        return (document.get("unlearning") or {}).get("n_rows")
    if key == "data":
        return (document.get("game") or {}).get("n_records")
    return None


def dataset_entries(document: Mapping[str, Any], dataset_version: str | None = None) -> list[DatasetEntry]:
    """The tables an audit document read, with their roles; ``dataset_version`` labels the training data.

    Audits of other kinds (text audits fingerprint their files differently) have no entry."""
    fingerprints = (document.get("data") or {}).get("fingerprints") or {}
    config = document.get("config") or {}
    entries = []
    for key, (role, option) in SOURCES.items():
        digest, where = fingerprints.get(key), config.get(option)
        if not isinstance(digest, str) or not isinstance(where, str) or not where:
            continue
        path = Path(where).expanduser()
        entries.append(
            DatasetEntry(
                role=role,
                fingerprint=digest,
                path=str(path.resolve()),
                file_name=path.name,
                n_rows=_rows(document, key),
                version=dataset_version if role == "trained" else None,
            )
        )
    return entries


def record_audit_lineage(
    store: Store, record: AuditRecord, document: Mapping[str, Any], dataset_version: str | None = None
) -> list[DatasetRecord]:
    """Record the datasets of an already recorded audit (idempotent: the same audit, the same rows)."""
    return store.record_lineage(record.id, dataset_entries(document, dataset_version))


def file_fingerprint(path: str | Path) -> str:
    """The content fingerprint an audit computes of a table file."""
    from membershield.data.io import load_table
    from membershield.data.pool import fingerprint_frame

    return fingerprint_frame(load_table(path))


def integrity(dataset: DatasetRecord) -> str:
    """Whether the file at a dataset's recorded path still holds the recorded content."""
    path = Path(dataset.path)
    if not path.is_file():
        return MISSING
    try:
        digest = file_fingerprint(path)
    except InputDataError:
        return UNREADABLE
    return UNCHANGED if digest == dataset.fingerprint else CHANGED


@dataclass
class ChainLink:
    """One dataset in one role for one model version, over every audit of that version that used it."""

    model_version: str | None
    role: str
    dataset: DatasetRecord
    audit_ids: list[int] = field(default_factory=list)
    integrity: str | None = None  # with verify only

    def to_dict(self) -> dict[str, Any]:
        out = {"model_version": self.model_version, "role": self.role, "audits": self.audit_ids}
        out["dataset"] = self.dataset.to_dict()
        return out | ({"integrity": self.integrity} if self.integrity is not None else {})


@dataclass(frozen=True)
class ModelLineage:
    model: str
    version: str | None
    store: str  # where, for people
    links: list[ChainLink]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "links": [link.to_dict() for link in self.links]}


def _chain(uses: list[DatasetUse]) -> list[ChainLink]:
    links: dict[tuple[str | None, str, str], ChainLink] = {}
    for use in uses:
        key = (use.model_version, use.dataset.fingerprint, use.role)
        link = links.setdefault(key, ChainLink(use.model_version, use.role, use.dataset))
        if use.audit_id not in link.audit_ids:
            link.audit_ids.append(use.audit_id)
    return list(links.values())


def _unknown_model(history: Store, model: str, version: str | None) -> str | None:
    """Why ``model`` (and ``version``) names nothing recorded, or None when it names audits."""
    audits = history.history(model_name=model)
    if not audits:
        names = history.model_names()
        known = f"; recorded models: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}" if names else ""
        return f"no audits of model '{model}' are recorded in {history.display}{known} (see `membershield history`)"
    versions = sorted({a.model_version for a in audits if a.model_version is not None})
    if version is not None and version not in versions:
        shown = ", ".join(versions) if versions else "none recorded"
        return f"model '{model}' has no audit of version '{version}' in {history.display} (versions: {shown})"
    return None


def model_lineage(
    model: str, version: str | None = None, store: str | None = None, *, verify: bool = False
) -> ModelLineage:
    """A model's datasets, per version (oldest audit first); ``verify`` re-fingerprints each file."""
    with open_store(store) as history:
        problem = _unknown_model(history, model, version)
        if problem is not None:
            raise InputDataError(problem)
        links = _chain(history.uses_of_model(model, version))
        where = history.display
    if verify:
        checked: dict[str, str] = {}  # a dataset used by several versions is hashed once
        for link in links:
            fingerprint = link.dataset.fingerprint
            if fingerprint not in checked:
                checked[fingerprint] = integrity(link.dataset)
            link.integrity = checked[fingerprint]
    return ModelLineage(model, version, where, links)


@dataclass
class ModelUse:
    """One model version's use of a dataset, over its audits."""

    model_name: str
    model_version: str | None
    role: str
    audit_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "role": self.role,
            "audits": self.audit_ids,
        }


@dataclass(frozen=True)
class DatasetUsers:
    dataset: DatasetRecord
    store: str
    uses: list[ModelUse]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset.to_dict(), "models": [u.to_dict() for u in self.uses]}


def _one_dataset(history: Store, prefix: str) -> DatasetRecord:
    cleaned = prefix.strip().lower()
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        raise ConfigError(
            f"--dataset takes a fingerprint (hexadecimal, as `membershield lineage` shows), got '{prefix}'"
        )
    found = history.find_datasets(cleaned)
    if not found:
        raise InputDataError(f"no dataset with a fingerprint starting '{cleaned}' is recorded in {history.display}")
    if len(found) > 1:
        shown = ", ".join(f"{d.short} ({d.file_name})" for d in found[:5])
        raise InputDataError(f"fingerprint '{cleaned}' matches {len(found)} datasets ({shown}); give more characters")
    return found[0]


def dataset_users(fingerprint: str, store: str | None = None) -> DatasetUsers:
    """The model versions that used a dataset (any unique fingerprint prefix): what must be retrained, or
    re-audited, when it is withdrawn."""
    with open_store(store) as history:
        dataset = _one_dataset(history, fingerprint)
        uses: dict[tuple[str, str | None, str], ModelUse] = {}
        for use in history.uses_of_dataset(dataset.id):
            key = (use.model_name, use.model_version, use.role)
            entry = uses.setdefault(key, ModelUse(use.model_name, use.model_version, use.role))
            if use.audit_id not in entry.audit_ids:
                entry.audit_ids.append(use.audit_id)
        return DatasetUsers(dataset, history.display, list(uses.values()))


def keep_scan(audit_file: str | Path, scan: Mapping[str, Any], store: str | None = None) -> DatasetRecord | None:
    """Keep a scan's summary with the audit's training dataset when the store has recorded it (the audit
    was recorded); None when it has not."""
    from membershield.result import load_document
    from membershield.risk import scan_summary

    document = load_document(audit_file)
    fingerprints = (document.get("data") or {}).get("fingerprints") or {}
    digest = fingerprints.get("members") or fingerprints.get("data")
    if not isinstance(digest, str):
        return None
    with open_store(store) as history:
        found = [d for d in history.find_datasets(digest) if d.fingerprint == digest]
        return history.attach_scan(found[0].id, scan_summary(scan)) if found else None
