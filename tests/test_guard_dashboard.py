"""The guard's dashboard in a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

import httpx
import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from membershield.guard.app import create_app, guard_config, issue_key
from membershield.guard.policy import policy_from_dict
from membershield.store import open_store
from tests.guard_server import serving
from tests.test_report import ARTIFACTS, CHROMIUM, _browser_or_skip


def _audit(version: int, auc: float, tpr: float) -> dict:
    return {
        "target": {"spec": "models/iris.joblib", "sha256": f"{version:064d}"},
        "created_at": f"2026-01-0{version}T12:00:00+00:00",
        "attacks": [
            {
                "name": "lira",
                "auc": auc,
                "auc_ci_low": auc - 0.02,
                "auc_ci_high": auc + 0.02,
                "tpr_at_fpr": [{"fpr": 0.01, "tpr": tpr, "ci_low": tpr / 2, "ci_high": tpr * 1.5, "measurable": True}],
            }
        ],
    }


def test_dashboard_shows_history_alerts_and_top_keys(tmp_path):
    sync_playwright = _browser_or_skip()
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = tmp_path / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), model)
    store = str(tmp_path / "guard.db")
    with open_store(store) as opened:
        for version, (auc, tpr) in enumerate([(0.81, 0.12), (0.74, 0.06), (0.62, 0.02)], start=1):
            opened.record_audit(_audit(version, auc, tpr), model_name="iris", model_version=f"v{version}")
        admin = issue_key(opened, "ops", admin=True)
        user = issue_key(opened, "mallory")
    policy = policy_from_dict({"detector": {"near_count": 5}})
    errors: list[str] = []
    requests: list[str] = []
    with serving(create_app(guard_config(str(model), None, policy, store))) as url:
        rng = np.random.default_rng(0)
        for _ in range(8):
            probe = (X.iloc[3].to_numpy() * (1 + rng.normal(0, 0.01, 4))).tolist()
            httpx.post(f"{url}/v1/predict", json={"records": [probe]}, headers={"Authorization": f"Bearer {user}"})
        assert httpx.get(f"{url}/?key={user}").status_code == 403
        assert httpx.get(f"{url}/").status_code == 401
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("request", lambda request: requests.append(request.url))
                response = page.goto(f"{url}/?key={admin}", wait_until="load")
                assert response.status == 200
                title = page.title()
                figure = page.locator("figure.history[data-model='iris']")
                box = figure.locator("svg.trend").bounding_box()
                polylines = figure.locator("svg.trend polyline.series").count()
                points = figure.locator("svg.trend circle").count()
                alerts = page.inner_text("#alerts")
                top = page.inner_text("#top-keys")
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "guard-dashboard.png"), full_page=True)
            finally:
                browser.close()
    assert not errors, errors
    assert all(url_.startswith((url, "data:")) for url_ in requests), requests
    assert title == "membershield guard: iris"
    assert box is not None and box["width"] > 300 and box["height"] > 150
    assert polylines == 2 and points == 6
    assert "mallory" in alerts and "perturbation probing" in alerts and "near_duplicates=" in alerts
    assert "mallory" in top
