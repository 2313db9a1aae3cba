"""The audit report as a reader meets it: a self-contained HTML page checked in a real browser, the Markdown
summary for a pull request, and one-line errors for a bad audit.json."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from membershield.audit import AuditRun, run_audit
from membershield.cli import main
from membershield.config import AuditConfig
from membershield.report import fmt_rate, load_result, verdict
from tests.test_cli import assert_one_line_error, run_cli

ATTACKS = ["loss", "lira", "rmia"]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def audited(digits_audit, tmp_path_factory) -> AuditRun:
    """A real audit of the memorising digits model, with a --slice-column, written to disk."""
    directory = tmp_path_factory.mktemp("report")
    paths = {}
    for name, source in (
        ("members", digits_audit.members),
        ("nonmembers", digits_audit.nonmembers),
        ("population", digits_audit.population),
    ):
        table = pd.read_csv(source)
        table["site"] = ["north" if i % 3 == 0 else "south" for i in range(len(table))]
        paths[name] = directory / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    config = AuditConfig(
        model=str(digits_audit.overfit_model),
        train=str(paths["members"]),
        holdout=str(paths["nonmembers"]),
        population=str(paths["population"]),
        label_column="digit",
        slice_column="site",
        ignore_columns=["site"],
        attacks=list(ATTACKS),
        references=4,
        split_check=True,
        out=str(directory / "out"),
        cache=str(directory / "cache"),
        seed=0,
    )
    return run_audit(config)


@pytest.fixture(scope="module")
def out_dir(audited: AuditRun) -> Path:
    return Path(audited.result.config["out"])


@pytest.fixture(scope="module")
def report_html(out_dir: Path) -> Path:
    """report.html rendered by `membershield report` from audit.json and scores.csv alone."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["membershield", "report", str(out_dir / "audit.json")])
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc
    path = out_dir / "report.html"
    assert path.is_file()
    return path


def visible_text(html: str) -> str:
    text = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"\s+", " ", text)


# --------------------------------------------------------------------------------------------------
# HTML


def test_scores_csv_carries_the_target_predictions(out_dir: Path) -> None:
    scores = pd.read_csv(out_dir / "scores.csv")
    assert {"predicted_label", "predicted_confidence", *ATTACKS} <= set(scores.columns)
    assert scores["predicted_confidence"].between(0.1, 1.0).all()  # max softmax of 10 classes is >= 0.1
    members = scores[scores["is_member"]]
    assert (members["predicted_label"] == members["label"]).all()  # the model fits its training records


def test_html_report_is_self_contained(report_html: Path) -> None:
    html = report_html.read_text(encoding="utf-8")
    lowered = html.lower()
    assert "<script" not in lowered
    assert "<link" not in lowered and "@import" not in lowered and "@font-face" not in lowered
    for pattern in (
        r"""src\s*=\s*["']?\s*(https?:)?//""",
        r"""href\s*=\s*["']?\s*(https?:)?//""",
        r"url\(\s*['\"]?(https?:)?//",
    ):
        assert not re.search(pattern, lowered), pattern
    sources = re.findall(r"""<img[^>]*\ssrc="([^"]+)\"""", html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for source in sources:
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_report_reads_top_down(report_html: Path, audited: AuditRun) -> None:
    html = report_html.read_text(encoding="utf-8")
    text = visible_text(html)
    for name in ATTACKS:
        assert name in text
    # one ROC figure, one score histogram per attack, a reliability diagram and a confidence histogram
    assert len(re.findall(r"<img\s", html)) == 1 + len(ATTACKS) + 2
    order = [
        "Membership leaks",
        "Headline numbers",
        "All attacks",
        "ROC curves",
        "Score distributions",
        "Per-slice results",
        "Most exposed records",
        "Train / holdout accuracy",
        "Calibration",
        "Split check",
        "Audit trail",
    ]
    headings = [visible_text(h).strip() for h in re.findall(r"<h2>(.*?)</h2>", html, flags=re.S)]
    assert [h for h in headings if any(h.startswith(o) for o in order)] == headings
    assert [next(o for o in order if h.startswith(o)) for h in headings] == order
    # 600 non-members cannot resolve 0.1% FPR: said in words, with the count
    assert "not measurable (600 non-members)" in text
    lira_1 = next(r for r in audited.result.attack("lira").tpr_at_fpr if r["fpr"] == 0.01)
    assert f"tp {lira_1['tp']}/600 · fp {lira_1['fp']}/600" in text
    assert "By class (digit)" in text and "By site" in text
    assert "expected calibration error" in text.lower() or "ECE" in text
    result = audited.result
    assert result.target["sha256"] in text
    for digest in result.data["fingerprints"].values():
        assert digest in text
    assert "scikit-learn" in text and "references" in text


def test_audit_command_writes_the_report(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    args = ["audit", "--model", str(digits_audit.overfit_model), "--train", str(digits_audit.members)]
    args += ["--holdout", str(digits_audit.nonmembers), "--label-column", "digit", "--attacks", "loss,confidence"]
    args += ["--out", str(out), "--cache", str(tmp_path / "cache")]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "report.html" in stdout
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "confidence" in html and "ROC curves" in html
    assert "<script" not in html.lower()


def test_report_without_scores_explains_the_missing_plots(out_dir: Path, tmp_path, monkeypatch, capsys) -> None:
    shutil.copy(out_dir / "audit.json", tmp_path / "audit.json")
    target = tmp_path / "elsewhere" / "page.html"
    code, stdout, err = run_cli(monkeypatch, capsys, "report", str(tmp_path / "audit.json"), "--out", str(target))
    assert code == 0, err
    assert str(target) in stdout
    text = visible_text(target.read_text(encoding="utf-8"))
    assert "scores.csv was not found next to audit.json" in text
    assert "Membership leaks" in text and "not measurable (600 non-members)" in text


def test_calibration_is_skipped_with_a_note_without_prediction_columns(out_dir: Path, tmp_path, monkeypatch, capsys):
    shutil.copy(out_dir / "audit.json", tmp_path / "audit.json")
    scores = pd.read_csv(out_dir / "scores.csv").drop(columns=["predicted_label", "predicted_confidence"])
    scores.to_csv(tmp_path / "scores.csv", index=False)
    code, _, err = run_cli(monkeypatch, capsys, "report", str(tmp_path / "audit.json"))
    assert code == 0, err
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Calibration is not shown" in visible_text(html)
    assert len(re.findall(r"<img\s", html)) == 1 + len(ATTACKS)


# --------------------------------------------------------------------------------------------------
# Markdown


def test_markdown_summary_has_the_headline_numbers(out_dir: Path, audited: AuditRun, tmp_path, monkeypatch, capsys):
    code, stdout, err = run_cli(monkeypatch, capsys, "report", str(out_dir / "audit.json"), "--format", "md")
    assert code == 0, err
    assert stdout.startswith("### membershield audit")
    assert "Membership leaks" in stdout
    for attack in audited.result.attacks:
        assert f"`{attack.name}`" in stdout
        assert f"{attack.auc:.3f} ({attack.auc_ci_low:.3f}–{attack.auc_ci_high:.3f})" in stdout
        rate = next(r for r in attack.tpr_at_fpr if r["fpr"] == 0.01)
        assert f"{rate['tp']}/600 members, {rate['fp']}/600 non-members" in stdout
    assert "not measurable (600 non-members)" in stdout
    assert "Split check:** passed" in stdout
    assert audited.result.target["sha256"][:12] in stdout
    assert "<" not in stdout  # plain Markdown, nothing for a comment renderer to strip

    written = tmp_path / "comment.md"
    code, stdout, err = run_cli(
        monkeypatch, capsys, "report", str(out_dir / "audit.json"), "--format", "md", "--out", str(written)
    )
    assert code == 0, err
    assert str(written) in stdout
    assert "not measurable (600 non-members)" in written.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# wording and verdict on the result itself


def test_rates_carry_interval_and_counts(audited: AuditRun) -> None:
    lira = audited.result.attack("lira")
    unmeasurable = next(r for r in lira.tpr_at_fpr if r["fpr"] == 0.001)
    assert fmt_rate(unmeasurable) == "not measurable (600 non-members)"
    measured = next(r for r in lira.tpr_at_fpr if r["fpr"] == 0.1)
    text = fmt_rate(measured)
    assert "95% CI" in text and f"{measured['tp']} of 600 members" in text and f"{measured['fp']} of 600" in text


def test_verdict_follows_the_evidence(audited: AuditRun) -> None:
    document = audited.result.to_dict()
    assert verdict(document).level == "leak"

    blind = copy.deepcopy(document)
    for attack in blind["attacks"]:
        attack["auc_ci_low"] = 0.45
        for rate in attack["tpr_at_fpr"]:
            if rate["measurable"]:
                rate["ci_low"] = 0.0
    calm = verdict(blind)
    assert calm.level == "no-leak" and "not ruled out" in calm.detail

    shifted = copy.deepcopy(document)
    shifted["split_check"]["ok"] = False
    assert verdict(shifted).level == "inconclusive"


# --------------------------------------------------------------------------------------------------
# errors


def test_report_on_a_missing_file(tmp_path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "report", str(tmp_path / "nope.json"))
    assert_one_line_error(code, err, "nope.json", "not found")


def test_report_on_invalid_json(tmp_path, monkeypatch, capsys) -> None:
    broken = tmp_path / "audit.json"
    broken.write_text('{"schema_version": "1.0", "attacks": [', encoding="utf-8")
    code, _, err = run_cli(monkeypatch, capsys, "report", str(broken))
    assert_one_line_error(code, err, "audit.json", "not valid JSON")


def test_report_on_json_that_is_not_an_audit(tmp_path, monkeypatch, capsys) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema_version": "1.0", "name": "something else"}), encoding="utf-8")
    code, _, err = run_cli(monkeypatch, capsys, "report", str(other))
    assert_one_line_error(code, err, "other.json", "not an audit result")

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema_version": "0.3"}), encoding="utf-8")
    code, _, err = run_cli(monkeypatch, capsys, "report", str(old))
    assert_one_line_error(code, err, "old.json", "schema version 0.3")


def test_report_with_an_unknown_format(out_dir: Path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "report", str(out_dir / "audit.json"), "--format", "pdf")
    assert_one_line_error(code, err, "'pdf'", "html", "md")


def test_load_result_round_trips(out_dir: Path, audited: AuditRun) -> None:
    loaded = load_result(out_dir)  # a directory holding audit.json is accepted too
    assert loaded.to_dict() == audited.result.to_dict()


# --------------------------------------------------------------------------------------------------
# a real browser


def _browser_or_skip():
    problems = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        problems.append("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.is_file():
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    if problems:
        reason = "browser check of report.html cannot run: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: the browser check is required here)")
        pytest.skip(reason)
    return sync_playwright


def test_report_renders_in_a_real_browser(report_html: Path) -> None:
    sync_playwright = _browser_or_skip()
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report_html.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({w: e.naturalWidth, h: e.naturalHeight, done: e.complete}))"
            )
            headline = page.inner_text(".verdict h2")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert len(images) == 1 + len(ATTACKS) + 2
    assert all(image["done"] and image["w"] > 0 and image["h"] > 0 for image in images), images
    assert headline.startswith("Membership leaks")
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
