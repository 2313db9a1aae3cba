"""ONNX models as audit targets: a skl2onnx conversion audits exactly like the scikit-learn model it came
from, a torch.onnx export of an overfit network leaks, and each way an ONNX file or its data can be wrong
is one line that names the file and the fix. Every model is built here from scikit-learn's digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from membershield.audit import run_audit
from membershield.config import AuditConfig
from membershield.errors import ModelLoadError
from membershield.targets import load_model
from tests.test_cli import assert_one_line_error, run_cli

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")

N_MEMBERS = 300
ATTACKS = ["loss", "confidence", "lira", "rmia"]


class Digits:
    def __init__(self, directory: Path) -> None:
        from sklearn.datasets import load_digits

        frame = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
        order = np.random.default_rng(1).permutation(len(frame))
        self.directory = directory
        self.members_frame = frame.iloc[order[:N_MEMBERS]].reset_index(drop=True)
        self.members = directory / "members.csv"
        self.nonmembers = directory / "nonmembers.csv"
        self.members_frame.to_csv(self.members, index=False)
        frame.iloc[order[N_MEMBERS : 2 * N_MEMBERS]].to_csv(self.nonmembers, index=False)
        self.X = self.members_frame.drop(columns="digit")
        self.y = self.members_frame["digit"].to_numpy()


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    return Digits(tmp_path_factory.mktemp("onnx-digits"))


@pytest.fixture(scope="module")
def logistic(digits: Digits) -> tuple[Path, Path]:
    """An overfit scikit-learn pipeline (fitted on a plain array) and its skl2onnx conversion."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=100.0, max_iter=300))
    model.fit(digits.X.to_numpy(), digits.y)
    joblib.dump(model, digits.directory / "logistic.joblib")
    converted = to_onnx(model, digits.X.to_numpy()[:1].astype(np.float32))
    (digits.directory / "logistic.onnx").write_bytes(converted.SerializeToString())
    return digits.directory / "logistic.joblib", digits.directory / "logistic.onnx"


def _torch_mlp(digits: Digits):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    X = torch.tensor(digits.X.to_numpy() / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.y)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):  # full batch, no regularisation: it memorises its 300 records
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        optimiser.step()
    scaled = torch.nn.Sequential(_Scale(), net)  # the export takes the raw 0..16 pixel values
    return scaled.eval()


class _Scale:
    def __new__(cls):
        import torch

        class Scale(torch.nn.Module):
            def forward(self, x):
                return x / 16.0

        return Scale()


def _export(net, path: Path, dynamic: bool) -> Path:
    import torch

    axes = {"features": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with pytest.warns(DeprecationWarning):  # the legacy exporter: no onnxscript needed
        torch.onnx.export(
            net,
            (torch.zeros(1, 64),),
            path,
            dynamo=False,
            input_names=["features"],
            output_names=["logits"],
            dynamic_axes=axes,
        )
    return path


@pytest.fixture(scope="module")
def torch_export(digits: Digits):
    """The network exported with a dynamic and with a fixed batch of 1, and the network itself."""
    pytest.importorskip("torch")
    net = _torch_mlp(digits)
    dynamic = _export(net, digits.directory / "mlp.onnx", dynamic=True)
    fixed = _export(net, digits.directory / "mlp-batch1.onnx", dynamic=False)
    return dynamic, fixed, net


def _audit(digits: Digits, model: Path, out: str, attacks=ATTACKS, **options):
    config = AuditConfig(
        label_column="digit",
        model=str(model),
        train=str(digits.members),
        holdout=str(digits.nonmembers),
        attacks=list(attacks),
        references=8,
        out=str(digits.directory / out),
        cache=str(digits.directory / out / "cache"),  # each audit trains its own references
        **options,
    )
    return run_audit(config).result


def test_a_skl2onnx_conversion_audits_like_the_joblib_model(digits, logistic) -> None:
    joblib_file, onnx_file = logistic
    original = _audit(digits, joblib_file, "joblib")
    converted = _audit(digits, onnx_file, "onnx", recipe=str(joblib_file))
    assert converted.target["kind"] == "onnx" and converted.target["recipe"] == original.target["recipe"]
    aucs = {a.name: a.auc for a in original.attacks}
    assert {a.name for a in converted.attacks} == set(ATTACKS)
    for attack in converted.attacks:
        assert attack.auc == pytest.approx(aucs[attack.name], abs=1e-3), attack.name
    assert aucs["lira"] > 0.6  # the equality is of a leak, not of noise


def test_class_labels_come_from_the_converted_model(digits, logistic) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    _, onnx_file = logistic
    assert load_model(str(onnx_file)).target.classes.tolist() == list(range(10))  # from the ZipMap
    letters = np.array(list("abcdefghij"))[digits.y]
    model = LogisticRegression(max_iter=200).fit(digits.X.to_numpy() / 16.0, letters)
    tensor = to_onnx(model, digits.X.to_numpy()[:1].astype(np.float32), options={"zipmap": False})
    (digits.directory / "letters.onnx").write_bytes(tensor.SerializeToString())
    target = load_model(str(digits.directory / "letters.onnx")).target
    assert target.classes.tolist() == list("abcdefghij")  # from the classifier node, without a ZipMap
    expected = model.predict_proba(digits.X.to_numpy()[:5] / 16.0)
    assert np.allclose(np.exp(target.logits(digits.X.iloc[:5] / 16.0)), expected, atol=1e-5)


def test_one_input_per_column_is_fed_by_name(digits) -> None:
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    columns = list(digits.X.columns)
    model = make_pipeline(ColumnTransformer([("scale", StandardScaler(), columns)]), LogisticRegression(max_iter=300))
    model.fit(digits.X, digits.y)
    converted = to_onnx(model, digits.X.iloc[:1].astype(np.float32))
    path = digits.directory / "per-column.onnx"
    path.write_bytes(converted.SerializeToString())
    target = load_model(str(path)).target
    assert len(target.inputs) == 64
    shuffled = digits.X.iloc[:20, ::-1]  # inputs are matched by name, not by position
    assert np.allclose(np.exp(target.logits(shuffled)), model.predict_proba(digits.X.iloc[:20]), atol=1e-5)


def test_a_torch_export_of_an_overfit_network_leaks(digits, torch_export, monkeypatch, capsys) -> None:
    dynamic, *_ = torch_export
    out = digits.directory / "torch-out"
    args = ["audit", "--model", str(dynamic), "--train", str(digits.members), "--holdout", str(digits.nonmembers)]
    args += ["--label-column", "digit", "--attacks", "loss", "--out", str(out), "--cache", str(out / "cache")]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    result = json.loads((out / "audit.json").read_text())
    assert result["target"]["kind"] == "onnx" and result["target"]["classes"] == [str(c) for c in range(10)]
    assert result["utility"]["train_accuracy"] == 1.0
    loss = result["attacks"][0]
    # the network's own AUC, up to the order of near-zero member losses, which float32 ties differently
    assert loss["auc"] == pytest.approx(_torch_loss_auc(digits, torch_export[2]), abs=2e-3)
    assert loss["auc_ci_low"] > 0.5, stdout  # digits generalise well (holdout ~0.91), yet the leak is resolved


def _torch_loss_auc(digits: Digits, net) -> float:
    """The LOSS attack's AUC computed on the network in memory: what the ONNX file must reproduce."""
    import torch
    from sklearn.metrics import roc_auc_score

    def losses(frame: pd.DataFrame) -> np.ndarray:
        X = torch.tensor(frame.drop(columns="digit").to_numpy(), dtype=torch.float32)
        with torch.no_grad():
            labels = torch.tensor(frame["digit"].to_numpy())
            return torch.nn.functional.cross_entropy(net(X), labels, reduction="none").numpy()

    members, nonmembers = losses(pd.read_csv(digits.members)), losses(pd.read_csv(digits.nonmembers))
    truth = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return float(roc_auc_score(truth, -np.r_[members, nonmembers]))


def test_a_fixed_batch_export_and_metadata_classes(digits, torch_export) -> None:
    import onnx
    from onnx import helper

    dynamic, fixed, _ = torch_export
    rows = digits.X.iloc[:7]  # not a multiple of anything: the fixed batch of 1 is fed row by row
    expected = load_model(str(dynamic)).target.logits(rows)
    assert np.allclose(load_model(str(fixed)).target.logits(rows), expected, atol=1e-5)
    proto = onnx.load(str(dynamic))
    helper.set_model_props(proto, {"classes": json.dumps([f"digit-{k}" for k in range(10)])})
    onnx.save(proto, str(digits.directory / "named.onnx"))
    assert load_model(str(digits.directory / "named.onnx")).target.classes[3] == "digit-3"


def test_reference_attacks_without_recipe_ask_for_it(digits, torch_export, monkeypatch, capsys) -> None:
    dynamic, *_ = torch_export
    args = ["audit", "--model", str(dynamic), "--train", str(digits.members), "--holdout", str(digits.nonmembers)]
    args += ["--label-column", "digit", "--attacks", "loss,lira", "--out", str(digits.directory / "x")]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "'lira' needs reference models", "--recipe")


def _cli_error(digits: Digits, model: Path, monkeypatch, capsys, *extra: str) -> tuple[int, str]:
    args = ["audit", "--model", str(model), "--train", str(digits.members), "--holdout", str(digits.nonmembers)]
    args += ["--label-column", "digit", "--attacks", "loss", "--out", str(digits.directory / "bad"), *extra]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    return code, err


def test_a_corrupt_onnx_file_is_one_line(digits, monkeypatch, capsys) -> None:
    path = digits.directory / "corrupt.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf graph" * 10)
    code, err = _cli_error(digits, path, monkeypatch, capsys)
    assert_one_line_error(code, err, str(path), "export it again")


def test_a_column_count_mismatch_is_one_line(digits, logistic, torch_export, monkeypatch, capsys) -> None:
    _, onnx_file = logistic
    code, err = _cli_error(digits, onnx_file, monkeypatch, capsys, "--ignore-columns", "pixel_0_0")
    assert_one_line_error(code, err, str(onnx_file), "expects 64 feature columns", "has 63")
    code, err = _cli_error(digits, torch_export[0], monkeypatch, capsys, "--ignore-columns", "pixel_0_0,pixel_0_1")
    assert_one_line_error(code, err, str(torch_export[0]), "expects 64 feature columns", "has 62")


def test_missing_per_column_input_names_the_column(digits, tmp_path) -> None:
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    columns = ["pixel_2_2", "pixel_3_3", "pixel_4_4"]
    model = make_pipeline(ColumnTransformer([("keep", "passthrough", columns)]), LogisticRegression(max_iter=300))
    model.fit(digits.X[columns], digits.y)
    converted = to_onnx(model, digits.X[columns].iloc[:1].astype(np.float32))
    (tmp_path / "three.onnx").write_bytes(converted.SerializeToString())
    target = load_model(str(tmp_path / "three.onnx")).target
    from membershield.errors import InputDataError

    with pytest.raises(InputDataError, match=r"lacks 'pixel_2_2'.*three\.onnx|three\.onnx.*lacks 'pixel_2_2'"):
        target.logits(pd.DataFrame({"pixel_3_3": [1.0], "pixel_4_4": [2.0]}))


def test_missing_onnxruntime_says_how_to_install(logistic, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an environment without it imports
    with pytest.raises(ModelLoadError, match=r"onnxruntime.*pip install 'membershield\[onnx\]'"):
        load_model(str(logistic[1]))
