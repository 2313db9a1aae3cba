"""Lineage in the history store, on SQLite and PostgreSQL: two versions of a training table, three model
versions trained on them, the chain per model, the models per dataset, integrity after the files change,
the schema upgrade of an older store, and bad input as one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from membershield.audit import run_audit
from membershield.config import AuditConfig
from membershield.data.io import load_table
from membershield.data.pool import fingerprint_frame
from membershield.history import record_audit
from membershield.lineage import dataset_users, model_lineage
from membershield.result import load_document
from membershield.store import DatasetEntry, Store, open_store
from tests.test_cli import run_cli
from tests.test_store import store_url  # noqa: F401  (the SQLite / PostgreSQL fixture)

VERSIONS = (("1.0", "v1", "2025-01"), ("1.1", "v1", "2025-01"), ("2.0", "v2", "2025-06"))


@pytest.fixture(scope="module")
def base_audit(digits_audit, tmp_path_factory) -> dict:
    """One real audit document of the digits model (the LOSS attack: no reference model to train)."""
    out = tmp_path_factory.mktemp("lineage-base")
    run_audit(
        AuditConfig(
            model=str(digits_audit.overfit_model),
            train=str(digits_audit.members),
            holdout=str(digits_audit.nonmembers),
            label_column="digit",
            attacks=["loss"],
            references=0,
            out=str(out),
            cache="",
            split_check=False,
        )
    )
    return load_document(out / "audit.json")


def write_tables(digits_audit, directory: Path) -> dict[str, Path]:
    """Two versions of the training table (v2 drops 100 records, as after a withdrawal) and a holdout."""
    members = pd.read_csv(digits_audit.members)
    tables = {"v1": members, "v2": members.iloc[100:].reset_index(drop=True)}
    paths = {}
    for name, table in tables.items():
        paths[name] = directory / f"members-{name}.csv"
        table.to_csv(paths[name], index=False)
    paths["holdout"] = directory / "holdout.csv"
    pd.read_csv(digits_audit.nonmembers).to_csv(paths["holdout"], index=False)
    return paths


def version_document(base: dict, paths: dict[str, Path], table: str, model_version: str, month: int) -> dict:
    """The audit document of one model version: trained on ``table``, audited on the holdout."""
    fingerprints = {
        "members": fingerprint_frame(load_table(paths[table])),
        "nonmembers": fingerprint_frame(load_table(paths["holdout"])),
    }
    n_members = len(load_table(paths[table]))
    return {
        **base,
        "created_at": f"2026-{month:02d}-01T00:00:00+00:00",
        "target": {**base["target"], "sha256": f"{model_version}".ljust(64, "0")},
        "config": {**base["config"], "train": str(paths[table]), "holdout": str(paths["holdout"])},
        "data": {**base["data"], "fingerprints": fingerprints, "n_members": n_members},
    }


@pytest.fixture
def recorded(store_url, base_audit, digits_audit, tmp_path) -> dict:  # noqa: F811
    paths = write_tables(digits_audit, tmp_path)
    for month, (model_version, table, dataset_version) in enumerate(VERSIONS, start=1):
        out = tmp_path / f"out-{model_version}"
        out.mkdir()
        document = version_document(base_audit, paths, table, model_version, month)
        (out / "audit.json").write_text(json.dumps(document))
        record_audit(out, store_url, model_name="digits", model_version=model_version, dataset_version=dataset_version)
    return {"store": store_url, "paths": paths}


def test_chain_across_two_dataset_versions_and_three_model_versions(recorded) -> None:
    store, paths = recorded["store"], recorded["paths"]
    found = model_lineage("digits", store=store)
    chain = [(link.model_version, link.role, link.dataset.file_name, link.dataset.version) for link in found.links]
    assert chain == [
        ("1.0", "trained", "members-v1.csv", "2025-01"),
        ("1.0", "audited", "holdout.csv", None),
        ("1.1", "trained", "members-v1.csv", "2025-01"),
        ("1.1", "audited", "holdout.csv", None),
        ("2.0", "trained", "members-v2.csv", "2025-06"),
        ("2.0", "audited", "holdout.csv", None),
    ]
    v1 = found.links[0].dataset
    assert v1.n_rows == 600 and v1.path == str(paths["v1"].resolve())
    assert v1.fingerprint == fingerprint_frame(load_table(paths["v1"]))
    assert found.links[4].dataset.n_rows == 500
    assert [link.audit_ids for link in found.links[:2]] == [[1], [1]]
    only = model_lineage("digits", "2.0", store=store)
    assert {link.dataset.file_name for link in only.links} == {"members-v2.csv", "holdout.csv"}

    users = dataset_users(v1.short, store)
    assert [(u.model_name, u.model_version, u.role) for u in users.uses] == [
        ("digits", "1.0", "trained"),
        ("digits", "1.1", "trained"),
    ]
    holdout = found.links[1].dataset
    assert len(dataset_users(holdout.fingerprint, store).uses) == 3

    # recording an audit again adds nothing
    record_audit(paths["v1"].parent / "out-1.0", store, model_name="digits", model_version="1.0")
    assert len(model_lineage("digits", store=store).links) == 6
    with open_store(store) as opened:
        assert opened.find_datasets("") == []  # an empty prefix names nothing
        assert len(opened.find_datasets(v1.fingerprint[:1])) >= 1


def test_lineage_command_and_integrity(recorded, monkeypatch, capsys) -> None:
    store, paths = recorded["store"], recorded["paths"]
    code, stdout, err = run_cli(monkeypatch, capsys, "lineage", "digits", "--store", store)
    assert code == 0, err
    for text in ("members-v1.csv", "members-v2.csv", "holdout.csv", "2025-06", "trained on", "audited on", "600"):
        assert text in stdout, text
    v1 = fingerprint_frame(load_table(paths["v1"]))
    assert v1[:12] in stdout

    code, stdout, err = run_cli(monkeypatch, capsys, "lineage", "--dataset", v1[:10], "--store", store)
    assert code == 0, err
    assert "1.0" in stdout and "1.1" in stdout and "2.0" not in stdout
    assert "2 model version(s) trained on it must be retrained" in stdout

    code, stdout, err = run_cli(monkeypatch, capsys, "lineage", "digits", "--verify", "--store", store)
    assert code == 0, err
    assert "3 unchanged, 0 changed, 0 missing" in stdout

    changed = pd.read_csv(paths["v1"])
    changed.iloc[0, 0] = changed.iloc[0, 0] + 1  # one value edited in place
    changed.to_csv(paths["v1"], index=False)
    paths["v2"].unlink()
    code, stdout, err = run_cli(
        monkeypatch, capsys, "lineage", "digits", "--verify", "--store", store, "--format", "json"
    )
    assert code == 1, err
    links = json.loads(stdout)["links"]
    states = {(link["model_version"], link["dataset"]["file_name"]): link["integrity"] for link in links}
    assert states[("1.0", "members-v1.csv")] == "changed"
    assert states[("2.0", "members-v2.csv")] == "missing"
    assert states[("2.0", "holdout.csv")] == "unchanged"


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_lineage_bad_input_is_one_line(recorded, monkeypatch, capsys) -> None:
    store = recorded["store"]
    cases = [
        (["lineage", "nobody"], "no audits of model 'nobody'"),
        (["lineage", "digits", "--version", "9.9"], "no audit of version '9.9'"),
        (["lineage", "--dataset", "ffffffffffff"], "no dataset with a fingerprint starting"),
        (["lineage", "--dataset", "not-hex"], "takes a fingerprint"),
        (["lineage"], "give a MODEL name or --dataset"),
        (["lineage", "digits", "--format", "xml"], "--format must be"),
    ]
    for args, needle in cases:
        code, _, err = run_cli(monkeypatch, capsys, *args, "--store", store)
        assert code == 2 and needle in one_error_line(err), (args, err)


def test_a_store_from_before_lineage_upgrades_and_records_it(store_url, base_audit) -> None:  # noqa: F811
    old = Store(store_url, revision="0003")
    assert "datasets" not in sa.inspect(old.engine).get_table_names()
    record = old.record_audit(base_audit, model_name="legacy", model_version="0.9")
    old.close()
    with open_store(store_url) as store:
        assert store.revision() == "0005"  # upgraded through 0004 (lineage) to the head
        assert {"datasets", "dataset_uses"} <= set(sa.inspect(store.engine).get_table_names())
        assert store.uses_of_model("legacy") == []  # recorded before lineage was kept
        entry = DatasetEntry("trained", "ab" * 32, "/data/old.csv", "old.csv", 10, "v0")
        store.record_lineage(record.id, [entry])
        (use,) = store.uses_of_model("legacy", "0.9")
    assert (use.dataset.file_name, use.dataset.n_rows, use.dataset.version, use.role) == (
        "old.csv",
        10,
        "v0",
        "trained",
    )
