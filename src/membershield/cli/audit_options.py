"""The options of ``membershield audit``, one named type each, so that the command reads as what it does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _text(help_text: str) -> Any:
    return typer.Option(help=help_text)


Text = str | None
ModelOption = Annotated[
    Text,
    _text(
        "Fitted classifier (.joblib/.pkl, .onnx), hf:DIR text classifier, PyTorch recipe file.py:function, or"
        " http(s):// endpoint."
    ),
]
TrainOption = Annotated[Text, _text("Members: the records the model was trained on (CSV, Parquet, NPZ).")]
HoldoutOption = Annotated[Text, _text("Non-members: records the model never saw.")]
LabelColumnOption = Annotated[Text, _text("Name of the label column.")]
AttacksOption = Annotated[Text, _text("Comma-separated attack names (see `membershield attacks`).")]
ReferencesOption = Annotated[int | None, _text("Reference (shadow) models to train for LiRA, RMIA, shadow.")]
PopulationOption = Annotated[Text, _text("Extra records from the same distribution, unseen by the model.")]
SliceColumnOption = Annotated[Text, _text("Column to report per-value results for.")]
IgnoreColumnsOption = Annotated[Text, _text("Comma-separated columns that are not model features.")]
IdColumnOption = Annotated[Text, _text("Column identifying each record: overlap is checked by id; not a feature.")]
UserColumnOption = Annotated[
    Text, _text("Column naming each record's data subject: adds one membership decision per user; not a feature.")
]
QuasiIdentifiersOption = Annotated[
    Text, _text("Comma-separated feature columns whose rare combinations form the 'rare' slice (default: all).")
]
RarityKOption = Annotated[
    int | None, _text("A record is rare when its quasi-identifier combination occurs fewer than k times (default 5).")
]
SeedOption = Annotated[int | None, _text("Seed for every random choice; same seed, same audit.")]
OutOption = Annotated[Text, _text("Output directory for audit.json and scores.csv.")]
CacheOption = Annotated[Text, _text("Directory of cached reference-model outputs.")]
ConfigOption = Annotated[Path | None, _text("TOML file with the same options; flags override it.")]
BackendOption = Annotated[Text, _text("Where reference models train: local, processes (joblib) or ray.")]
RayAddressOption = Annotated[Text, _text("Ray cluster to join (default: start a local one).")]
NJobsOption = Annotated[int | None, _text("Parallel workers for the processes and ray backends.")]
TrainerOption = Annotated[
    Text, _text("auto (K models at once when the recipe declares vectorised_spec), vectorised, sequential.")
]
RecipeOption = Annotated[
    Text,
    _text(
        "Training pipeline (file.py:function or a model file whose clone is trained): the reference models of an"
        " endpoint, ONNX or hf: audit, or every model of a recipe audit (--data)."
    ),
]
# A recipe audit (the privacy game): the options that make an audit one.
DataOption = Annotated[
    Text,
    _text(
        "Recipe audit (the privacy game): the pool that --models models of --recipe train on, each on a random"
        " half; no --model, --train or --holdout."
    ),
]
ModelsOption = Annotated[
    int | None, _text("Models a recipe audit trains (default 32); each is the target of the others.")
]
# A black-box audit of a live endpoint.
ApiFormatOption = Annotated[
    Text, _text("How an --model http://... endpoint talks: membershield (the guard), mlflow or kserve-v2.")
]
HeaderOption = Annotated[
    list[str] | None,
    _text("HTTP header 'Name: value' for the endpoint (repeatable); ${VAR} is read from the environment."),
]
MaxQueriesOption = Annotated[
    int | None, _text("Most records the audit may send to the endpoint (refused up front if too few).")
]
QueriesPerSecondOption = Annotated[float | None, _text("Most records per second sent to the endpoint.")]
BatchSizeOption = Annotated[int | None, _text("Records per request to the endpoint (default 64).")]
LabelOnlyQueriesOption = Annotated[
    int | None, _text("Most records the label-only-boundary attack sends to the target per record (default 100).")
]
TextColumnOption = Annotated[Text, _text("Column of texts a text classifier (--model hf:DIR) reads.")]
# What is done with the audit besides running it; not settings of the audit (AuditConfig).
PlanOption = Annotated[
    bool, typer.Option("--plan", help="Print how many models will train, how many are cached, and an ETA.")
]
MlflowOption = Annotated[
    bool, typer.Option("--mlflow", help="Also log metrics and files to MLflow (the active or a new run).")
]
StoreOption = Annotated[Text, _text("History database, a file or URL (default .membershield/history.db).")]
ModelNameOption = Annotated[Text, _text("Name the audit is recorded under (default: the model file's stem).")]
ModelVersionOption = Annotated[Text, _text("Model version recorded with the audit.")]
DatasetVersionOption = Annotated[Text, _text("Version label recorded with the training data (--train) in the lineage.")]
# An unlearning check: records removed before the model was retrained must be at chance against the holdout.
ForgottenOption = Annotated[
    Text, _text("Records removed before retraining (unlearning check): audited against --holdout, must be at chance.")
]
