"""The dashboard page: audit history per model (AUC and TPR at 1% FPR per version, as inline SVG), live
alerts with what each key learnt (the newest ones, see :mod:`.incident`) and the keys that query most.
Server-rendered with Jinja2; the page runs no script."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from membershield.result import summary_rate
from membershield.store import AuditRecord

if TYPE_CHECKING:
    from membershield.guard.service import GuardService

_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"]))
WIDTH, HEIGHT, PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 560, 240, 44, 16, 16, 48
SERIES = (("AUC", "#1f5fa8"), ("TPR @ 1% FPR", "#c0392b"))
EXPLAINED_ALERTS = 10  # the newest alerts whose keys' learning is worked out on the page


def trend_points(records: list[AuditRecord]) -> list[dict[str, Any]]:
    """Per audit: its version label, the worst attack's AUC and its TPR at 1% FPR (None if not measurable)."""
    points = []
    for record in records:
        worst = record.worst_attack()
        name, metrics = worst if worst else (None, {})
        rate = (summary_rate(metrics) if metrics else None) or {}
        points.append(
            {
                "version": record.model_version or f"#{record.id}",
                "attack": name,
                "AUC": metrics.get("auc"),
                "TPR @ 1% FPR": rate.get("tpr") if rate.get("measurable") else None,
            }
        )
    return points


def trend_svg(points: list[dict[str, Any]], title: str) -> Markup:
    """A line plot of both series over the versions, y from 0 to 1."""
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    step = inner_w / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return PAD_LEFT + (i * step if len(points) > 1 else inner_w / 2)

    def y(v: float) -> float:
        return PAD_TOP + (1 - v) * inner_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" role="img" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}"><title>{escape(title)}</title>'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>'
            f'<text x="{PAD_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:g}</text>'
        )
    for i, point in enumerate(points):
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - PAD_BOTTOM + 16}" text-anchor="middle" font-size="11">'
            f"{escape(str(point['version']))[:14]}</text>"
        )
    for n, (name, colour) in enumerate(SERIES):
        coords = [(x(i), y(p[name])) for i, p in enumerate(points) if p[name] is not None]
        if len(coords) > 1:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            parts.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for i, p in enumerate(points):
            if p[name] is not None:
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(p[name]):.1f}" r="3.5" fill="{colour}">'
                    f"<title>{escape(str(p['version']))}: {name} {p[name]:.3f}</title></circle>"
                )
        lx = PAD_LEFT + n * 150
        parts.append(
            f'<rect x="{lx}" y="{HEIGHT - 18}" width="12" height="4" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="{HEIGHT - 13}" font-size="11">{name}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def learnt_summaries(service: GuardService, alerts: list[dict[str, Any]]) -> dict[int, str]:
    """Per alert (the newest few), one line on what its key learnt, or why that cannot be told."""
    from membershield.errors import MembershieldError
    from membershield.guard.incident_report import summary_line

    lines = {}
    for alert in alerts[:EXPLAINED_ALERTS]:
        try:
            lines[alert["id"]] = summary_line(service.incidents.learnt(alert))
        except MembershieldError as exc:
            lines[alert["id"]] = f"cannot be told: {exc}"
    return lines


def render_dashboard(service: GuardService) -> str:
    store = service.store
    by_model: dict[str, list[AuditRecord]] = {}
    for record in store.history():
        by_model.setdefault(record.model_name, []).append(record)
    guarded = service.config.model_name
    names = sorted(by_model, key=lambda n: (n != guarded, n))
    models = []
    for name in names:
        points = trend_points(by_model[name])
        models.append({"name": name, "points": points, "svg": trend_svg(points, f"Audit trend of {name}")})
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    alerts = store.alerts(limit=50, model_name=guarded)
    return _ENV.get_template("dashboard.html").render(
        model=guarded,
        mode="upstream " + service.config.upstream if service.config.upstream else "local model",
        models=models,
        alerts=alerts,
        learnt=learnt_summaries(service, alerts),
        top_today=store.guard_usage(since=day, limit=10, model_name=guarded),
        top_all=store.guard_usage(limit=10, model_name=guarded),
        policy=service.policy.to_dict(),
        now=datetime.now(UTC).isoformat(timespec="seconds"),
    )
