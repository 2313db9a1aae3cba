"""The report of a synthetic-data audit shows its own risks: the DCR risk with its counts and interval,
anonymeter's three risks with their intervals and attack counts (or why one was not computed) and what the
gate's keys compare, in report.html (checked in a real browser) and summary.md alike, with the figures of
audit.json; `membershield report` renders them again from audit.json; a malformed risk is one error."""

from __future__ import annotations

import json
import re
import sys
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from membershield.cli import main
from membershield.report.html import render_html
from membershield.report.markdown import render_markdown
from membershield.result import AuditResult, load
from membershield.synthetic.generators import generate, parse_generator
from membershield.synthetic.tables import conform
from tests.test_cli import assert_one_line_error, run_cli
from tests.test_report import ARTIFACTS, CHROMIUM, _browser_or_skip, visible_text
from tests.test_synthetic_audit import JITTER, NUMERIC, patients

N = 150  # records per side
RISKS = ("singling_out", "linkability", "inference")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Training and holdout records and two synthetic tables: a jitter copy of the training records (it
    leaks) and a jitter copy of other records from the same source (its generator never saw a member)."""
    d = tmp_path_factory.mktemp("synthetic-report")
    table = patients(3 * N, np.random.default_rng(100))
    paths = {}
    for i, side in enumerate(("train", "holdout", "other")):
        paths[side] = d / f"{side}.csv"
        table.iloc[i * N : (i + 1) * N].to_csv(paths[side], index=False)
    for name, start in (("leaky", 0), ("independent", 2 * N)):
        source = conform(table.iloc[start : start + N].reset_index(drop=True), NUMERIC, name)
        paths[name] = d / f"{name}.csv"
        generate(parse_generator(JITTER), source, N, seed=1, numeric=NUMERIC).to_csv(paths[name], index=False)
    return paths


def audit_cli(files: dict[str, Path], synthetic: str, out: Path, *extra: str) -> dict:
    """`membershield audit-synthetic` as a user runs it (it writes report.html and summary.md)."""
    args = ["audit-synthetic", "--train", str(files["train"]), "--holdout", str(files["holdout"])]
    args += ["--synthetic", str(files[synthetic]), "--attacks", "dcr,domias", "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["membershield", *args, "--store", str(out.parent / "history.db"), *extra])
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc
    return json.loads((out / "audit.json").read_text())


@pytest.fixture(scope="module")
def leaky(files, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("leaky") / "out"
    return audit_cli(files, "leaky", out, "--label-column", "outcome"), out


@pytest.fixture(scope="module")
def independent(files, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("independent") / "out"  # no label, no secret: inference is not computed
    return audit_cli(files, "independent", out), out


def risk_text(entry: dict) -> tuple[str, str]:
    return f"{entry['risk']:.3f}", f"{entry['ci_low']:.3f}–{entry['ci_high']:.3f}"


def section(html: str) -> str:
    found = re.search(r'<section id="synthetic-risks">.*?</section>', html, flags=re.S)
    assert found, "report.html has no synthetic-risks section"
    return found.group(0)


def shown(html: str) -> str:
    """The synthetic-risks section as a reader sees its text."""
    return unescape(visible_text(section(html)))


def saved(path: Path, document: dict) -> AuditResult:
    """``document`` written as an audit.json and read back through the validating loader."""
    path.write_text(json.dumps(document))
    return load(path)


def expected_figures(document: dict) -> list[str]:
    """What both reports must show, formatted from audit.json: the DCR risk, its interval and counts, each
    measured anonymeter risk with its interval and attack counts, and the bounds the gate compares."""
    dcr = document["synthetic"]["dcr_risk"]
    figures = [*risk_text(dcr), f"{dcr['closer_to_train']} of {dcr['n_synthetic']} synthetic records"]
    figures += [f"{dcr['n_per_side']} training and {dcr['n_per_side']} holdout records", "max_dcr_risk"]
    figures += [f"upper 95% bound, {dcr['ci_high']:.3f}", "max_anonymeter_risk"]
    for name in RISKS:
        entry = document["anonymeter"][name]
        if entry is None or entry["risk"] is None:
            continue
        n, control = entry["n_attacks"], entry["n_control"]
        control_text = f"{control:.0f}" if float(control).is_integer() else f"{control:.1f}"
        figures += [*risk_text(entry), f"{entry['n_success']} of {n}", f"{control_text} of {n}"]
        figures += [f"{entry['n_baseline']} of {n}", f"{entry['ci_high']:.3f} (estimate {entry['risk']:.3f})"]
    return figures


def test_leaky_report_shows_the_dcr_and_anonymeter_figures_of_audit_json(leaky) -> None:
    document, out = leaky
    html = shown((out / "report.html").read_text(encoding="utf-8"))
    markdown = " ".join((out / "summary.md").read_text(encoding="utf-8").split())
    assert document["synthetic"]["dcr_risk"]["flagged"] and document["anonymeter"]["linkability"]["ci_low"] > 0
    for figure in expected_figures(document):
        assert figure in html, figure
        assert figure in markdown, figure
    for text in (html, markdown):
        assert "Synthetic-data risks" in text and "closer to the training records than chance" in text
        assert "singling-out" in text and "linkability" in text and "inference of 'outcome'" in text
        assert "not computed" not in text
    assert "**DCR risk:** " + risk_text(document["synthetic"]["dcr_risk"])[0] + " (95% CI" in markdown
    assert "| inference of 'outcome' | " + risk_text(document["anonymeter"]["inference"])[0] in markdown


def test_independent_report_is_at_baseline_and_says_what_was_not_computed(independent) -> None:
    document, out = independent
    dcr = document["synthetic"]["dcr_risk"]
    assert not dcr["flagged"] and dcr["share_ci_low"] <= 0.5 <= dcr["share_ci_high"]  # ground truth: at chance
    assert all(a["auc_ci_low"] <= 0.5 <= a["auc_ci_high"] for a in document["attacks"])
    assert document["anonymeter"]["inference"] is None
    html = shown((out / "report.html").read_text(encoding="utf-8"))
    markdown = " ".join((out / "summary.md").read_text(encoding="utf-8").split())
    for text in (html, markdown):
        for figure in expected_figures(document):
            assert figure in text, figure
        assert "at the holdout baseline" in text and "not flagged" in text
        assert "not computed: no secret column: pass --secret-columns" in text
        assert "inference not computed (fails unless allow_unmeasurable = true)" in text


def test_report_command_renders_a_saved_synthetic_audit_again(leaky, tmp_path, monkeypatch, capsys) -> None:
    _, out = leaky
    written = (out / "report.html").read_text(encoding="utf-8")
    again = tmp_path / "again.html"
    code, _, err = run_cli(monkeypatch, capsys, "report", str(out / "audit.json"), "--out", str(again))
    assert code == 0, err
    assert section(again.read_text(encoding="utf-8")) == section(written)
    code, printed, err = run_cli(monkeypatch, capsys, "report", str(out), "--format", "md")
    assert code == 0, err
    assert printed == (out / "summary.md").read_text(encoding="utf-8")


def test_risks_missing_from_the_audit_are_said_not_computed_and_model_audits_have_none(leaky, tmp_path) -> None:
    document, _ = leaky
    result = saved(tmp_path / "no-anonymeter.json", {**document, "anonymeter": None})  # validated: may be null
    html, markdown = shown(render_html(result, None)), render_markdown(result)
    for text in (html, markdown):
        assert "not computed: the audit ran with --no-anonymeter" in text
        assert "nothing: anonymeter was not run, so the check fails unless allow_unmeasurable = true" in text
        assert risk_text(document["synthetic"]["dcr_risk"])[1] in text
    stopped = {"risk": None, "ci_low": None, "ci_high": None, "error": "RuntimeError: no query found", "n_cols": 3}
    refused = saved(
        tmp_path / "refused.json", {**document, "anonymeter": {**document["anonymeter"], "singling_out": stopped}}
    )
    text = shown(render_html(refused, None))
    assert "not computed: anonymeter stopped (RuntimeError: no query found)" in text
    assert "singling-out not computed (fails unless allow_unmeasurable = true)" in text
    no_dcr = render_markdown(saved(tmp_path / "no-dcr.json", {**document, "synthetic": None}))
    assert "**DCR risk:** not in this audit" in no_dcr and "nothing: the audit has no DCR risk" in no_dcr
    model_like = {k: v for k, v in document.items() if k not in ("synthetic", "anonymeter")} | {"mode": "model"}
    assert 'id="synthetic-risks"' not in render_html(model_like, None)
    assert "Synthetic-data risks" not in render_markdown(model_like)


def test_a_malformed_risk_is_one_error_naming_every_field(leaky, tmp_path, monkeypatch, capsys) -> None:
    document, _ = leaky
    broken = json.loads(json.dumps(document))
    broken["synthetic"]["dcr_risk"]["closer_to_train"] = "most"
    broken["anonymeter"]["linkability"]["ci_high"] = "wide"
    del broken["anonymeter"]["singling_out"]["n_success"]
    (tmp_path / "audit.json").write_text(json.dumps(broken))
    code, _, err = run_cli(monkeypatch, capsys, "report", str(tmp_path / "audit.json"))
    needles = ("'synthetic.dcr_risk.closer_to_train' must be a whole number", "'anonymeter.linkability.ci_high'")
    assert_one_line_error(code, err, *needles, "'anonymeter.singling_out.n_success' must be a whole number")
    (tmp_path / "audit.json").write_text(json.dumps({**document, "synthetic": {"risk": 0.2}}))
    code, _, err = run_cli(monkeypatch, capsys, "report", str(tmp_path / "audit.json"), "--format", "md")
    assert_one_line_error(code, err, "'synthetic' must be null or an object with a 'dcr_risk' object")


def test_synthetic_risks_are_visible_in_a_real_browser(leaky) -> None:
    sync_playwright = _browser_or_skip()
    document, out = leaky
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto((out / "report.html").as_uri(), wait_until="load")
            page.click("nav.toc a[href='#synthetic-risks']")
            risks = page.locator("#synthetic-risks")
            visible, box = risks.is_visible(), risks.bounding_box()
            in_view = page.evaluate("document.querySelector('#synthetic-risks').getBoundingClientRect().top")
            dcr_card = page.inner_text("#dcr-risk .big")
            cards = page.locator("#synthetic-risks .card .k").all_inner_texts()
            rows = page.locator("#synthetic-risks table tbody tr").count()
            ARTIFACTS.mkdir(exist_ok=True)
            risks.screenshot(path=str(ARTIFACTS / "synthetic-risks.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert visible and box is not None and box["width"] > 600 and box["height"] > 300
    assert abs(in_view) < 5  # the contents link scrolls to it
    assert dcr_card == f"{document['synthetic']['dcr_risk']['risk']:.3f}"
    assert cards == [
        "DCR risk",
        "anonymeter · singling-out",
        "anonymeter · linkability",
        "anonymeter · inference of 'outcome'",
    ]
    assert rows == 3
