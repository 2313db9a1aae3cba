"""The incident worked example of the README: a memorising model, its audit data, and a scripted client
that probes a running guard with records whose membership the audit knows.

    python examples/incident_demo.py data OUT_DIR
        writes OUT_DIR/members.csv, nonmembers.csv, population.csv (500, 500 and 400 records of a
        12-feature classification task with 15% of labels flipped) and OUT_DIR/credit.joblib (a random
        forest fitted on the members, which memorises their labels)
    python examples/incident_demo.py probe OUT_DIR --url http://127.0.0.1:8080 --key KEY
        sends 120 members, 80 non-members, 20 population records and 10 perturbed copies of one member,
        10 records a request, and prints how many of each it sent
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import numpy as np
import pandas as pd


def write_data(out: Path) -> None:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    out.mkdir(parents=True, exist_ok=True)
    X, y = make_classification(n_samples=1400, n_features=12, n_informative=6, flip_y=0.15, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(12)]).assign(label=y)
    frame.iloc[:500].to_csv(out / "members.csv", index=False)
    frame.iloc[500:1000].to_csv(out / "nonmembers.csv", index=False)
    frame.iloc[1000:].to_csv(out / "population.csv", index=False)
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X[:500], y[:500])
    joblib.dump(model, out / "credit.joblib")
    print(f"wrote members.csv, nonmembers.csv, population.csv and credit.joblib to {out}")


def probe(out: Path, url: str, key: str) -> None:
    import httpx

    def values(name: str) -> np.ndarray:
        return pd.read_csv(out / f"{name}.csv").drop(columns="label").to_numpy()

    members = values("members")
    rng = np.random.default_rng(0)
    copies = members[400] * (1 + rng.normal(0, 0.01, (10, members.shape[1])))
    sent = np.concatenate([members[:120], values("nonmembers")[:80], values("population")[:20], copies])
    for start in range(0, len(sent), 10):
        reply = httpx.post(
            f"{url}/v1/predict",
            json={"records": sent[start : start + 10].tolist()},
            headers={"Authorization": f"Bearer {key}"},
        )
        reply.raise_for_status()
    print("sent 120 members, 80 non-members, 20 population records and 10 perturbed copies of one member")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["data", "probe"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--key", default="")
    args = parser.parse_args()
    if args.command == "data":
        write_data(args.out)
    else:
        probe(args.out, args.url, args.key)


if __name__ == "__main__":
    main()
