"""``membershield audit-diffusion``: was this image in a diffusion model's training set?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from membershield.cli.audit import summary_table, time_summary
from membershield.cli.audit_options import MlflowOption, ModelNameOption, ModelVersionOption, StoreOption
from membershield.cli.common import DropOverlapOption, RichProgress, console, errors, progress_columns
from membershield.errors import ConfigError
from membershield.result import AuditResult


def _numbers(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{flag} takes whole numbers separated by commas, got '{text}'") from exc
    if not values:
        raise ConfigError(f"{flag} takes whole numbers separated by commas, got '{text}'")
    return values


def audit_diffusion(
    model: Annotated[
        str, typer.Option(help="diffusers DDPM folder: DDPMPipeline.save_pretrained, or a UNet2DModel + scheduler.")
    ],
    members: Annotated[str, typer.Option(help="Images the model was trained on: a folder of PNGs or an .npz.")],
    nonmembers: Annotated[
        str, typer.Option(help="Images from the same distribution the model never saw (folder of PNGs or .npz).")
    ],
    attacks: Annotated[
        str | None, typer.Option(help="Comma-separated: timestep-loss,secmi,pia (default: all).")
    ] = None,
    out: Annotated[
        str, typer.Option(help="Output directory for audit.json and scores.csv.")
    ] = "membershield-diffusion-audit",
    seed: Annotated[int, typer.Option(help="Seed of the noise draws, the split check and the ε bound.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images on the device at once (bounds memory).")] = 64,
    timesteps: Annotated[
        str | None, typer.Option(help="timestep-loss: timesteps of 1,000 (default 50,100,200), scaled to the model's.")
    ] = None,
    noise_draws: Annotated[
        int | None, typer.Option(help="timestep-loss: noise draws per timestep (default 4).")
    ] = None,
    secmi_timestep: Annotated[int | None, typer.Option(help="secmi: timestep t of 1,000 (default 100).")] = None,
    secmi_interval: Annotated[int | None, typer.Option(help="secmi: DDIM step size k of 1,000 (default 10).")] = None,
    pia_timestep: Annotated[int | None, typer.Option(help="pia: timestep t of 1,000 (default 200).")] = None,
    drop_overlap: DropOverlapOption = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    mlflow: MlflowOption = False,
    store: StoreOption = None,
    model_name: ModelNameOption = None,
    model_version: ModelVersionOption = None,
) -> None:
    """Audit a diffusion model (diffusers DDPM) with image membership attacks; write audit.json and scores.csv."""
    from membershield.audit import REPORTS
    from membershield.diffusion.audit import DiffusionAuditConfig, run_diffusion_audit
    from membershield.history import record_audit

    options = {
        "timestep-loss": {"timesteps": _numbers(timesteps, "--timesteps"), "draws": noise_draws},
        "secmi": {"timestep": secmi_timestep, "interval": secmi_interval},
        "pia": {"timestep": pia_timestep},
    }
    cfg = DiffusionAuditConfig(
        model=model,
        members=members,
        nonmembers=nonmembers,
        attacks=[a for a in attacks.split(",") if a.strip()] if attacks else None,
        attack_options={name: {k: v for k, v in given.items() if v is not None} for name, given in options.items()},
        out=out,
        seed=seed,
        batch_size=batch_size,
        device=device,
        drop_overlap=drop_overlap,
    )
    with Progress(*progress_columns(), console=errors, transient=True) as progress:
        run = run_diffusion_audit(cfg, progress=RichProgress(progress), reports=REPORTS)
    print_diffusion_summary(run.result, Path(out))
    if mlflow:
        from membershield.mlflow_log import log_audit

        console.print(f"logged to MLflow run {log_audit(run.result.to_dict(), out)}")
    recorded = record_audit(out, store, model_name=model_name, model_version=model_version)
    record = recorded.record
    console.print(f"recorded as audit #{record.id} of '{record.model_name}' in {recorded.store}", markup=False)


def print_diffusion_summary(result: AuditResult, out: Path) -> None:
    """The attack table, the denoising loss of both sides, the split check, warnings, time and files."""
    from membershield.metrics import nonmembers_needed, unresolved_fprs

    console.print(summary_table(result))
    unresolved = unresolved_fprs(result.config["fprs"], result.data["n_nonmembers"])
    if unresolved:
        console.print(
            f"not measurable: {result.data['n_nonmembers']} non-members cannot resolve an FPR of"
            f" {', '.join(f'{100 * f:g}%' for f in unresolved)}"
            f" (that needs at least {nonmembers_needed(min(unresolved))})."
        )
    u = result.utility
    console.print(
        f"denoising loss (timesteps {', '.join(map(str, u['denoising_loss_timesteps']))}): members"
        f" {u['member_denoising_loss']:.4f}, non-members {u['nonmember_denoising_loss']:.4f}"
        f" (gap {u['denoising_loss_gap']:+.4f})",
        markup=False,
    )
    if result.split_check:
        s = result.split_check
        state = "[green]ok[/green]" if s["ok"] else "[bold red]FAILED[/bold red]"
        console.print(f"split check: blind AUC {s['blind_auc']:.3f} ({s['ci_low']:.3f}–{s['ci_high']:.3f}) {state}")
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {warning}")
    console.print(time_summary(result))
    console.print(
        f"wrote {out / 'audit.json'}, {out / 'scores.csv'}, {out / 'report.html'} and {out / 'summary.md'}",
        markup=False,
    )
