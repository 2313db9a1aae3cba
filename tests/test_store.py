"""The history store on SQLite and on a real PostgreSQL server: recording, verdicts, concurrent writers,
schema upgrades of an old history, damaged and locked databases, and the audit/history commands.

PostgreSQL tests read the server from MEMBERSHIELD_TEST_POSTGRES_URL (``.ci/pg-start`` starts one and
prints it) and create a fresh database per test. Without the variable they are skipped, except under
CI=true, where a missing server is a failure.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from membershield.audit import run_audit
from membershield.config import AuditConfig
from membershield.gate import load_audit
from membershield.store import (
    DEFAULT_STORE,
    Store,
    StoreError,
    audit_key,
    default_model_name,
    open_store,
    resolve_url,
)
from tests.test_cli import run_cli

POSTGRES_ENV = "MEMBERSHIELD_TEST_POSTGRES_URL"


# --------------------------------------------------------------------------------------------------
# Fixtures


def postgres_server() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        reason = (
            f"{POSTGRES_ENV} is not set, so the PostgreSQL store tests have no server"
            ' (start one with: eval "$(.ci/pg-start)")'
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; with CI=true they must run")
        pytest.skip(reason)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A fresh, empty store: a SQLite file, or a new database on the PostgreSQL test server."""
    if request.param == "sqlite":
        yield str(tmp_path / "history.db")
        return
    server = resolve_url(postgres_server())
    name = f"membershield_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"cannot reach the PostgreSQL test server {server.render_as_string()}: {exc.orig}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def small_audit(d, model: Path, out: Path) -> Path:
    """A real audit (LOSS and LiRA, 4 references) of one of the digits models; returns its audit.json."""
    run_audit(
        AuditConfig(
            model=str(model),
            train=str(d.members),
            holdout=str(d.nonmembers),
            label_column="digit",
            attacks=["loss", "lira"],
            references=4,
            out=str(out),
            cache=str(d.directory / "gate-cache"),  # shared with the gate tests: references train once
            split_check=False,
        )
    )
    return out / "audit.json"


@pytest.fixture(scope="module")
def audits(digits_audit, tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("store")
    return {
        "overfit": load_audit(small_audit(digits_audit, digits_audit.overfit_model, base / "overfit")),
        "unseen": load_audit(small_audit(digits_audit, digits_audit.unseen_model, base / "unseen")),
    }


def variant(audit: dict, writer: int, i: int) -> dict:
    """Another audit document of the same model (as a re-run with another seed would give)."""
    return {
        **audit,
        "created_at": f"2026-01-01T{writer:02d}:{i // 60:02d}:{i % 60:02d}+00:00",
        "config": {**audit["config"], "seed": 1000 * writer + i},
    }


# --------------------------------------------------------------------------------------------------
# Recording and reading


def test_audit_is_recorded_with_its_lineage_and_metrics(store_url, audits) -> None:
    audit = audits["overfit"]
    with open_store(store_url) as store:
        assert store.revision() == "0005"
        record = store.record_audit(
            audit, model_name="digits", model_version="1.4", report_path="out/audit.json", out_dir="out"
        )
        assert record.verdict is None  # not gated yet
        assert store.record_audit(audit).id == record.id  # the same document is one row
        (read,) = store.history()
    assert read == record
    assert read.model_name == "digits" and read.model_version == "1.4"
    assert read.model_sha256 == audit["target"]["sha256"]
    assert read.fingerprints == audit["data"]["fingerprints"]
    assert read.report_path == "out/audit.json" and read.out_dir == "out"
    assert read.created_at == datetime.fromisoformat(audit["created_at"]).astimezone(UTC)
    lira = next(a for a in audit["attacks"] if a["name"] == "lira")
    stored = read.metrics["attacks"]["lira"]
    assert (stored["auc"], stored["auc_ci_low"], stored["auc_ci_high"]) == (
        lira["auc"],
        lira["auc_ci_low"],
        lira["auc_ci_high"],
    )
    one_percent = next(r for r in lira["tpr_at_fpr"] if r["fpr"] == 0.01)
    assert stored["tpr_at_fpr"]["0.01"] == {k: one_percent[k] for k in ("tpr", "ci_low", "ci_high", "measurable")}
    assert read.worst_attack()[0] == "lira"
    assert json.loads(json.dumps(read.to_dict()))["model_name"] == "digits"


def test_verdicts_and_the_last_passing_audit(store_url, audits) -> None:
    with open_store(store_url) as store:
        first = store.record_audit(audits["unseen"], model_name="m")
        second = store.record_audit(audits["overfit"], model_name="m")
        other = store.record_audit(variant(audits["unseen"], 9, 0), model_name="other")
        assert store.last_passing("m") is None
        store.record_verdict(first.id, passed=True, failures=[], policy={"max_auc": 0.6})
        store.record_verdict(second.id, passed=False, failures=["lira AUC: ..."], policy={"max_auc": 0.6})
        store.record_verdict(other.id, passed=True, failures=[], policy={})
        assert store.last_passing("m").id == first.id
        assert store.last_passing("m", exclude=first) is None
        assert store.get(second.id).verdict == "fail"
        assert store.gate_runs(second.id)[0]["failures"] == ["lira AUC: ..."]
        assert [r.id for r in store.history(model_name="m")] == sorted(
            [first.id, second.id], key=lambda i: store.get(i).created_at
        )
        assert len(store.history()) == 3 and len(store.history(limit=1)) == 1
        renamed = store.rename(other.id, "m", model_version="2")
        assert renamed.model_name == "m" and renamed.model_version == "2"
        with pytest.raises(StoreError, match="no audit #999"):
            store.record_verdict(999, passed=True, failures=[], policy={})


def _record_many(url: str, audit: dict, writer: int, count: int, start) -> None:
    start.wait(120)
    with open_store(url) as store:
        for i in range(count):
            store.record_audit(variant(audit, writer, i), model_name=f"writer-{writer}")


def test_concurrent_writers_lose_no_row(store_url, audits) -> None:
    """Two processes record at the same moment into a store neither has created yet."""
    count = 25
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    writers = [
        context.Process(target=_record_many, args=(store_url, audits["unseen"], writer, count, start))
        for writer in (1, 2)
    ]
    for process in writers:
        process.start()
    start.set()
    for process in writers:
        process.join(240)
    assert [p.exitcode for p in writers] == [0, 0]
    with open_store(store_url) as store:
        records = store.history()
    assert len(records) == 2 * count
    assert len({r.id for r in records}) == 2 * count
    assert {r.model_name for r in records} == {"writer-1", "writer-2"}


def test_history_from_the_first_schema_revision_survives_an_upgrade(store_url, audits) -> None:
    """An old history file (schema 0001, written before gate runs existed) keeps working after an upgrade."""
    audit = audits["overfit"]
    old = Store(store_url, revision="0001")
    assert old.revision() == "0001"
    assert "gate_runs" not in sa.inspect(old.engine).get_table_names()
    audits_0001 = sa.table(
        "audits",
        sa.column("audit_key", sa.String),
        sa.column("model_name", sa.String),
        sa.column("model_version", sa.String),
        sa.column("model_sha256", sa.String),
        sa.column("fingerprints", sa.JSON),
        sa.column("metrics", sa.JSON),
        sa.column("verdict", sa.String),
        sa.column("report_path", sa.Text),
        sa.column("out_dir", sa.Text),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("recorded_at", sa.DateTime(timezone=True)),
    )
    written = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    with old.engine.begin() as connection:
        connection.execute(
            sa.insert(audits_0001).values(
                audit_key=audit_key(audit),
                model_name="legacy",
                model_version="0.9",
                model_sha256=audit["target"]["sha256"],
                fingerprints=audit["data"]["fingerprints"],
                metrics={"attacks": {"lira": {"auc": 0.7, "auc_ci_low": 0.65, "auc_ci_high": 0.75}}},
                verdict="pass",
                report_path="old/audit.json",
                out_dir="old",
                created_at=written,
                recorded_at=written,
            )
        )
    old.close()

    with open_store(store_url) as store:
        assert store.revision() == "0005"
        (record,) = store.history()
        assert (record.model_name, record.model_version, record.verdict) == ("legacy", "0.9", "pass")
        assert record.created_at == written
        assert record.metrics["attacks"]["lira"]["auc"] == 0.7
        assert store.find(audit).id == record.id
        assert store.last_passing("legacy").id == record.id
        store.record_verdict(record.id, passed=False, failures=["x"], policy={})  # the new table works
        assert store.gate_runs(record.id)[0]["passed"] is False


def test_store_from_a_newer_version_is_reported(tmp_path) -> None:
    path = tmp_path / "history.db"
    open_store(str(path)).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE membershield_schema_version SET version_num = '0099'")
    with pytest.raises(StoreError, match="newer membershield"):
        open_store(str(path))


# --------------------------------------------------------------------------------------------------
# Broken stores


def assert_one_line(message: str, *needles: str) -> None:
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def test_corrupt_database_file_gives_one_clear_error(tmp_path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not a database \x00\xff" * 200)
    with pytest.raises(StoreError) as error:
        open_store(str(path))
    assert_one_line(str(error.value), str(path), "not a SQLite database", "move it aside")


def test_damaged_existing_store_gives_one_clear_error(tmp_path, audits) -> None:
    path = tmp_path / "history.db"
    with open_store(str(path)) as store:
        store.record_audit(audits["unseen"])
    data = bytearray(path.read_bytes())
    data[:100] = os.urandom(100)  # the header
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreError) as error:
        open_store(str(path))
    assert_one_line(str(error.value), str(path), "not a SQLite database")


def test_locked_database_gives_one_clear_error(tmp_path, audits) -> None:
    path = tmp_path / "history.db"
    open_store(str(path)).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as error:
            open_store(str(path), timeout=0.3)
        assert time.monotonic() - started < 20
        assert_one_line(str(error.value), str(path), "locked by another process", "0.3 s")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with open_store(str(path)) as store:  # usable once the lock is gone
        store.record_audit(audits["unseen"])


def test_unreachable_postgres_server_gives_one_clear_error() -> None:
    with pytest.raises(StoreError) as error:
        open_store("postgresql://membershield@127.0.0.1:1/history", timeout=2)
    assert_one_line(str(error.value), "postgresql+psycopg://membershield@127.0.0.1:1/history")


def test_store_urls_and_model_names(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MEMBERSHIELD_STORE", raising=False)
    assert resolve_url(None).database == str(Path(DEFAULT_STORE).resolve())
    monkeypatch.setenv("MEMBERSHIELD_STORE", str(tmp_path / "team.db"))
    assert resolve_url(None).database == str(tmp_path / "team.db")
    assert resolve_url(str(tmp_path / "h.db")).drivername == "sqlite"
    assert resolve_url("postgres://u:secret@db:5432/h").drivername == "postgresql+psycopg"
    assert resolve_url("postgresql://u@db/h").drivername == "postgresql+psycopg"
    assert resolve_url("sqlite:////tmp/x.db").database == "/tmp/x.db"
    assert default_model_name({"target": {"spec": "models/fraud-v2.joblib"}}) == "fraud-v2"
    assert default_model_name({"target": {"spec": "examples/torch_mlp.py:recipe"}}) == "torch_mlp"
    assert default_model_name({}) == "model"
    for bad in ("://db", "postgresql://u@db:port/h"):
        with pytest.raises(StoreError, match="not a database URL"):
            resolve_url(bad)
    with pytest.raises(StoreError, match="no database driver"):
        open_store("nonsense://host/db")


# --------------------------------------------------------------------------------------------------
# The audit and history commands


def audit_args(d, out: Path, *extra: str) -> list[str]:
    return [
        "audit",
        "--model",
        str(d.overfit_model),
        "--train",
        str(d.members),
        "--holdout",
        str(d.nonmembers),
        "--label-column",
        "digit",
        "--attacks",
        "loss,lira",
        "--references",
        "4",
        "--cache",
        str(d.directory / "gate-cache"),
        "--out",
        str(out),
        *extra,
    ]


def test_audit_command_records_the_audit(store_url, digits_audit, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    extra = ["--store", store_url, "--model-name", "digits-mlp", "--model-version", "2.0"]
    code, stdout, err = run_cli(monkeypatch, capsys, *audit_args(digits_audit, out, *extra))
    assert code == 0, stdout + err
    assert "recorded as audit #1 of 'digits-mlp'" in stdout
    with open_store(store_url) as store:
        (record,) = store.history()
    assert record.model_version == "2.0" and record.verdict is None
    assert record.report_path == str(out / "audit.json") and record.out_dir == str(out)
    assert store_url.rsplit("/", 1)[-1] not in ("", "postgres")  # a test database, never the server's own
    assert record.metrics == open_store(store_url).find(load_audit(out / "audit.json")).metrics

    code, stdout, err = run_cli(monkeypatch, capsys, "history", "--store", store_url, "--format", "json")
    assert code == 0, err
    (row,) = json.loads(stdout)
    assert row["model_name"] == "digits-mlp" and row["metrics"]["attacks"]["lira"]["auc_ci_high"] > 0.5

    code, stdout, err = run_cli(monkeypatch, capsys, "history", "--store", store_url, "--model", "digits-mlp")
    assert code == 0, err
    assert "digits-mlp" in stdout and "lira" in stdout and "2.0" in stdout

    code, stdout, err = run_cli(monkeypatch, capsys, "history", "--store", store_url, "--model", "nothing")
    assert code == 0 and "no audits recorded" in stdout


def test_audit_records_under_the_model_file_stem_in_the_default_store(
    digits_audit, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEMBERSHIELD_STORE", raising=False)
    code, stdout, err = run_cli(monkeypatch, capsys, *audit_args(digits_audit, tmp_path / "out"))
    assert code == 0, stdout + err
    assert (tmp_path / DEFAULT_STORE).is_file()
    with open_store(str(tmp_path / DEFAULT_STORE)) as store:
        (record,) = store.history()
    assert record.model_name == "overfit"  # overfit.joblib


def test_store_failure_keeps_the_audit_files(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"garbage" * 1000)
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, *audit_args(digits_audit, out, "--store", str(broken)))
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: history store") and "broken.db" in lines[0]
    assert (out / "audit.json").is_file() and (out / "scores.csv").is_file()
    assert load_audit(out / "audit.json")["attacks"]


def test_history_command_bad_input(tmp_path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "history", "--store", str(tmp_path / "h.db"), "--format", "xml")
    assert code == 2 and "--format must be 'table' or 'json'" in err
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"\x01" * 5000)
    code, _, err = run_cli(monkeypatch, capsys, "history", "--store", str(broken))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a SQLite database" in err


def test_alerts_are_listed_per_model_when_guards_share_a_store(store_url) -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    with open_store(store_url) as store:
        store.record_alert("alice", "fraud", "perturbation probing", {"queries": 21}, when)
        store.record_alert("bob", "churn", "population sweep", {"queries": 500}, when)
        fraud = store.alerts(model_name="fraud")
        both = store.alerts()
    assert [(a["key"], a["model"]) for a in fraud] == [("alice", "fraud")]
    assert sorted(a["model"] for a in both) == ["churn", "fraud"]
