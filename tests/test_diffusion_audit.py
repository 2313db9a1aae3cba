"""`membershield audit-diffusion` on a small DDPM trained here until it memorises, and on bad input.

The end-to-end test trains the target on 48 digits and a copy on 48 other digits (once per session, about
35 s on one core),
then runs the command, the report, the history and the gate as a user would, in-process through
``membershield.cli.main``. The other tests need no training: an untrained pipeline is enough to check
loading, images and errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.diffusion_fixtures import DiffusionWorld, build_world, digits_images, small_unet, write_png_folder
from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import one_thread

pytest.importorskip("diffusers")

N_MEMBERS = 48  # 42 non-members resolve a 10% FPR
TRAIN_STEPS = 600


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="session")
def diffusion_world(tmp_path_factory: pytest.TempPathFactory) -> DiffusionWorld:
    with one_thread():
        return build_world(tmp_path_factory.mktemp("ddpm"), n_members=N_MEMBERS, steps=TRAIN_STEPS, batch_size=32)


@pytest.fixture(scope="session")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small DDPM pipeline, saved as DDPMPipeline.save_pretrained writes it."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("untrained") / "ddpm"
    DDPMPipeline(unet=small_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(directory)
    return directory


def audit_args(model: Path, members: Path, nonmembers: Path, out: Path, **changes: str) -> list[str]:
    options = {
        "--model": str(model),
        "--members": str(members),
        "--nonmembers": str(nonmembers),
        "--out": str(out),
        "--device": "cpu",
        "--store": str(out.parent / "history.db"),
    }
    options.update(changes)
    return ["audit-diffusion", *[x for pair in options.items() for x in pair]]


def attacks_of(out: Path) -> dict[str, dict]:
    return {a["name"]: a for a in json.loads((out / "audit.json").read_text())["attacks"]}


def test_memorising_ddpm_is_caught_and_a_copy_trained_elsewhere_is_not(
    diffusion_world, tmp_path, monkeypatch, capsys
) -> None:
    world = diffusion_world
    out = tmp_path / "target"
    args = audit_args(world.target, world.members_png, world.nonmembers_npz, out, **{"--model-name": "ddpm"})
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "secmi" in stdout and "denoising loss" in stdout and "split check" in stdout
    doc = json.loads((out / "audit.json").read_text())
    assert doc["mode"] == "diffusion" and doc["target"]["kind"] == "diffusers-ddpm"
    assert doc["data"]["n_members"] == doc["data"]["n_nonmembers"] == N_MEMBERS
    assert doc["utility"]["member_denoising_loss"] < doc["utility"]["nonmember_denoising_loss"]
    for name, attack in attacks_of(out).items():
        assert attack["auc_ci_low"] > 0.5, (name, attack["auc"], attack["auc_ci_low"])
        assert [r["measurable"] for r in attack["tpr_at_fpr"]] == [False, False, True]  # 48 non-members
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 2 * N_MEMBERS and {"timestep-loss", "secmi", "pia", "file"} <= set(scores.columns)
    assert "Denoising loss" in (out / "report.html").read_text()

    unseen = tmp_path / "unseen"
    code, _, err = run_cli(
        monkeypatch, capsys, *audit_args(world.unseen, world.members_npz, world.nonmembers_png, unseen)
    )
    assert code == 0, err
    for name, attack in attacks_of(unseen).items():
        assert attack["auc_ci_low"] < 0.5 < attack["auc_ci_high"], (name, attack["auc"])

    policy = tmp_path / "policy.toml"
    policy.write_text('max_auc = 0.75\nattacks = ["timestep-loss", "secmi", "pia"]\n')
    store = str(tmp_path / "history.db")
    code, stdout, _ = run_cli(
        monkeypatch, capsys, "gate", str(out / "audit.json"), "--policy", str(policy), "--store", store
    )
    assert code == 1 and stdout.count("FAIL ") == 3, stdout
    code, stdout, _ = run_cli(
        monkeypatch, capsys, "gate", str(unseen / "audit.json"), "--policy", str(policy), "--store", store
    )
    assert code == 0, stdout
    code, stdout, _ = run_cli(monkeypatch, capsys, "history", "--store", store, "--format", "json")
    assert code == 0 and {r["model_name"] for r in json.loads(stdout)} == {"ddpm", "ddpm-unseen"}
    code, stdout, _ = run_cli(monkeypatch, capsys, "report", str(unseen / "audit.json"), "--format", "md")
    assert code == 0 and "secmi" in stdout


def test_scores_do_not_depend_on_batching_or_the_other_images(untrained, tmp_path) -> None:
    from membershield.diffusion import DiffusionAuditConfig, run_diffusion_audit

    images = digits_images()[:12]
    np.savez(tmp_path / "m.npz", images=images[:6])
    np.savez(tmp_path / "n.npz", images=images[6:])
    np.savez(tmp_path / "n_other.npz", images=digits_images()[100:103])
    options = {"timestep-loss": {"timesteps": (100,), "draws": 2}, "secmi": {"timestep": 40, "interval": 20}}

    def scores(nonmembers: str, batch_size: int) -> pd.DataFrame:
        config = DiffusionAuditConfig(
            model=str(untrained),
            members=str(tmp_path / "m.npz"),
            nonmembers=str(tmp_path / nonmembers),
            attack_options=options,
            batch_size=batch_size,
            device="cpu",
            out=str(tmp_path / f"out-{nonmembers}-{batch_size}"),
            split_check=False,
        )
        return run_diffusion_audit(config).scores

    whole, batched, other = scores("n.npz", 64), scores("n.npz", 5), scores("n_other.npz", 4)
    for name in ("timestep-loss", "secmi", "pia"):
        np.testing.assert_allclose(whole[name], batched[name], rtol=1e-4, atol=1e-6)
        # the members' scores are the same whatever the non-members are: the noise is shared, not drawn per batch
        np.testing.assert_allclose(whole[name][:6], other[name][:6], rtol=1e-4, atol=1e-6)


def test_the_three_folder_layouts_give_the_same_model(untrained, tmp_path) -> None:
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from membershield.diffusion.model import load_diffusion_model

    unet = UNet2DModel.from_pretrained(untrained / "unet")
    scheduler = DDPMScheduler.from_pretrained(untrained / "scheduler")
    flat, folders = tmp_path / "flat", tmp_path / "folders"
    unet.save_pretrained(flat)
    scheduler.save_pretrained(flat)
    unet.save_pretrained(folders / "unet")
    scheduler.save_pretrained(folders / "scheduler")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    answers = []
    for directory, layout in ((untrained, "pipeline"), (flat, "flat"), (folders, "folders")):
        model = load_diffusion_model(directory, "cpu")
        assert model.layout.kind == layout and model.shape == (1, 8, 8) and model.num_train_timesteps == 1000
        with torch.inference_mode():
            answers.append(model.epsilon(x, 10))
    torch.testing.assert_close(answers[0], answers[1])
    torch.testing.assert_close(answers[0], answers[2])


def test_images_read_the_same_from_png_uint8_float_and_with_a_channel_axis(tmp_path) -> None:
    from membershield.diffusion.images import load_images

    images = digits_images()[:5]
    np.savez(tmp_path / "u8.npz", images=images)
    np.savez(tmp_path / "float.npz", images=images[:, None].astype(np.float64) / 255.0)
    png = load_images(write_png_folder(images, tmp_path / "png"), channels=1)
    u8, floats = load_images(tmp_path / "u8.npz", 1), load_images(tmp_path / "float.npz", 1)
    assert png.shape == u8.shape == floats.shape == (1, 8, 8)
    np.testing.assert_allclose(png.pixels, u8.pixels)
    np.testing.assert_allclose(u8.pixels, floats.pixels, atol=1e-6)
    assert (u8.stored_as, floats.stored_as, png.stored_as) == ("npz uint8", "npz float", "png")


def test_directory_that_is_not_a_pipeline(tmp_path, monkeypatch, capsys) -> None:
    model = tmp_path / "not-a-model"
    model.mkdir()
    (model / "notes.txt").write_text("hello")
    np.savez(tmp_path / "m.npz", images=digits_images()[:4])
    args = audit_args(model, tmp_path / "m.npz", tmp_path / "m.npz", tmp_path / "out")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "not-a-model", "not a diffusers pipeline", "save_pretrained")


def test_missing_model_folder_or_images(untrained, tmp_path, monkeypatch, capsys) -> None:
    np.savez(tmp_path / "n.npz", images=digits_images()[:4])
    args = audit_args(tmp_path / "no-such-model", tmp_path / "n.npz", tmp_path / "n.npz", tmp_path / "out")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "model folder not found", "no-such-model", "save_pretrained")
    args = audit_args(untrained, tmp_path / "no-such-images", tmp_path / "n.npz", tmp_path / "out")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "image path not found", "no-such-images", "folder of PNGs or an .npz")


def test_a_pipeline_that_is_not_a_ddpm(untrained, tmp_path, monkeypatch, capsys) -> None:
    import shutil

    model = tmp_path / "sd"
    shutil.copytree(untrained, model)
    index = json.loads((model / "model_index.json").read_text())
    index.update({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    (model / "model_index.json").write_text(json.dumps(index))
    np.savez(tmp_path / "n.npz", images=digits_images()[:4])
    code, _, err = run_cli(
        monkeypatch, capsys, *audit_args(model, tmp_path / "n.npz", tmp_path / "n.npz", tmp_path / "o")
    )
    assert_one_line_error(code, err, "StableDiffusionPipeline's unet is a UNet2DConditionModel", "UNet2DModel")


def test_without_diffusers_the_audit_says_which_extra_to_install(untrained, tmp_path, monkeypatch, capsys) -> None:
    import sys

    np.savez(tmp_path / "n.npz", images=digits_images()[:4])
    monkeypatch.setitem(sys.modules, "diffusers", None)  # what an installation without the extra gives
    code, _, err = run_cli(
        monkeypatch, capsys, *audit_args(untrained, tmp_path / "n.npz", tmp_path / "n.npz", tmp_path / "o")
    )
    assert_one_line_error(code, err, "needs the 'diffusion' extra", "pip install 'membershield[diffusion]'")


def test_images_of_mixed_sizes(untrained, tmp_path, monkeypatch, capsys) -> None:
    from PIL import Image

    folder = write_png_folder(digits_images()[:3], tmp_path / "mixed")
    Image.fromarray(np.zeros((9, 9), dtype=np.uint8)).save(folder / "9999.png")
    np.savez(tmp_path / "n.npz", images=digits_images()[10:14])
    code, _, err = run_cli(monkeypatch, capsys, *audit_args(untrained, folder, tmp_path / "n.npz", tmp_path / "out"))
    assert_one_line_error(code, err, "mixed sizes", "0000.png is 8×8", "9999.png is 9×9")


def test_empty_image_folder(untrained, tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "n.npz", images=digits_images()[:4])
    args = audit_args(untrained, tmp_path / "empty", tmp_path / "n.npz", tmp_path / "out")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "empty", "no PNG images")


def test_npz_without_images(untrained, tmp_path, monkeypatch, capsys) -> None:
    np.savez(tmp_path / "m.npz", X=digits_images()[:4])
    np.savez(tmp_path / "n.npz", images=digits_images()[4:8])
    code, _, err = run_cli(
        monkeypatch, capsys, *audit_args(untrained, tmp_path / "m.npz", tmp_path / "n.npz", tmp_path / "out")
    )
    assert_one_line_error(code, err, "m.npz", "no 'images' array", "it holds X")


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((4, 16, 16), dtype=np.uint8), "the model takes 1×8×8"),
        (np.zeros((4, 3, 8, 8), dtype=np.uint8), "images are 3×8×8 (channels×height×width) but the model takes 1×8×8"),
        (np.zeros((4, 8, 8, 1), dtype=np.float32) + 0.5, "channels last"),
        (np.full((4, 8, 8), 3.0), "must be in [0, 1]"),
        (np.full((4, 8, 8), 300, dtype=np.int64), "0-255"),
    ],
)
def test_images_the_model_cannot_take(untrained, tmp_path, monkeypatch, capsys, array, needle) -> None:
    np.savez(tmp_path / "m.npz", images=array)
    np.savez(tmp_path / "n.npz", images=digits_images()[4:8])
    code, _, err = run_cli(
        monkeypatch, capsys, *audit_args(untrained, tmp_path / "m.npz", tmp_path / "n.npz", tmp_path / "out")
    )
    assert_one_line_error(code, err, needle)


def test_the_same_image_on_both_sides_is_refused_or_dropped(untrained, tmp_path, monkeypatch, capsys) -> None:
    images = digits_images()
    np.savez(tmp_path / "m.npz", images=images[:6])
    np.savez(tmp_path / "n.npz", images=np.concatenate([images[6:11], images[2:3]]))
    args = audit_args(untrained, tmp_path / "m.npz", tmp_path / "n.npz", tmp_path / "out", **{"--attacks": "pia"})
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "1 member image(s) are also non-members", "--drop-overlap")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--drop-overlap")
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert doc["data"]["overlap_dropped"] == {"member_rows": [2], "nonmember_rows": [5]}
    assert (doc["data"]["n_members"], doc["data"]["n_nonmembers"]) == (5, 5)


def test_unknown_attack_and_bad_setting(untrained, tmp_path, monkeypatch, capsys) -> None:
    np.savez(tmp_path / "m.npz", images=digits_images()[:4])
    base = audit_args(untrained, tmp_path / "m.npz", tmp_path / "m.npz", tmp_path / "out")
    code, _, err = run_cli(monkeypatch, capsys, *base, "--attacks", "secm")
    assert_one_line_error(code, err, "'secm'", "did you mean", "'secmi'")
    code, _, err = run_cli(monkeypatch, capsys, *base, "--timesteps", "50,2000")
    assert_one_line_error(code, err, "timestep-loss timesteps must be in 0..999")


def test_a_diffusion_audit_loads_and_an_unknown_mode_does_not(untrained, tmp_path) -> None:
    from membershield.diffusion import DiffusionAuditConfig, run_diffusion_audit
    from membershield.errors import InputDataError
    from membershield.result import load

    np.savez(tmp_path / "m.npz", images=digits_images()[:6])
    np.savez(tmp_path / "n.npz", images=digits_images()[6:12])
    config = DiffusionAuditConfig(
        model=str(untrained), members=str(tmp_path / "m.npz"), nonmembers=str(tmp_path / "n.npz"),
        attacks=["pia"], device="cpu", out=str(tmp_path / "out"),
    )  # fmt: skip
    run_diffusion_audit(config)
    loaded = load(tmp_path / "out" / "audit.json")
    assert loaded.mode == "diffusion" and loaded.attack("pia").params["model_timestep"] == 200
    document = json.loads((tmp_path / "out" / "audit.json").read_text())
    (tmp_path / "bad.json").write_text(json.dumps({**document, "mode": "painting"}))
    with pytest.raises(InputDataError, match=r"'mode' must be one of .*diffusion"):
        load(tmp_path / "bad.json")
