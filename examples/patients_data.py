"""Build a patients table to scan from scikit-learn's bundled diabetes study (442 patients, no download).

The study's own columns (age, sex, body mass index, blood pressure, blood tests, disease progression) are
kept as they are; the columns a hospital extract would add are planted with known values: emails (every
third missing), phones, card numbers (Luhn-valid, 16 digits, written as bare integers), IBANs (every
fourth missing), US social security numbers, IP addresses, dates of birth that agree with the ages, UK
postcodes, a notes column with an email in every tenth note, the date each record was collected, and
columns that look like identifiers and are not (years of experience, 16-digit order numbers).

Writes ``patients.csv`` and ``data.toml`` (a policy that fails: see the README's "Scan a training table").

    python examples/patients_data.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes

POSTCODES = ["SW1A 1AA", "EC1A 1BB", "W1A 0AX", "M1 1AE", "B33 8TH", "CR2 6XH"]
COLLECTED_UNTIL = pd.Timestamp("2025-06-30")
POLICY = """\
max_low_k_share = 0.05
require_owner = ["protected"]

[columns.card]
owner = "payments"

[retention]
column = "collected_at"
max_age_days = 730
as_of = "2025-06-30"
"""


def diabetes() -> pd.DataFrame:
    return load_diabetes(scaled=False, as_frame=True).frame


def luhn_completed(body: str) -> str:
    """``body`` with the check digit that makes it pass Luhn.

    >>> luhn_completed("411111111111111")
    '4111111111111111'
    """
    total = 0
    for i, digit in enumerate(int(d) for d in reversed(body)):
        doubled = digit * 2 if i % 2 == 0 else digit  # the check digit will sit to the right
        total += doubled - 9 if doubled > 9 else doubled
    return body + str((10 - total % 10) % 10)


def gb_iban(bban: str) -> str:
    """A British IBAN around a bank code and account number, with its ISO 13616 check digits.

    >>> gb_iban("WEST12345698765432")
    'GB82WEST12345698765432'
    """
    number = int("".join(str(int(c, 36)) for c in bban + "GB00"))
    return f"GB{98 - number % 97:02d}{bban}"


def people_table(seed: int = 0) -> pd.DataFrame:
    """The diabetes patients with the personal data a hospital extract would hold, planted column by column."""
    rng = np.random.default_rng(seed)
    base = diabetes()
    n = len(base)
    digits = list("0123456789")
    table = pd.DataFrame({"patient_id": np.arange(n), "age": base["age"].astype(int), "sex": base["sex"].astype(int)})
    for name in ("bmi", "bp", "s1", "s5", "target"):
        table[name] = base[name]
    table["years_experience"] = rng.integers(0, 41, n)
    table["order_number"] = rng.integers(10**15, 10**16, n)  # 16 digits; about 1 in 10 pass Luhn by chance
    table["email"] = [f"patient{i}@example.org" if i % 3 else None for i in range(n)]
    table["phone"] = [f"+44 20 7946 {i:04d}" if i % 2 else f"07700 9{i:05d}" for i in range(n)]
    table["card"] = [int(luhn_completed("4" + "".join(rng.choice(digits, 14)))) for _ in range(n)]
    table["iban"] = [gb_iban("NWBK" + "".join(rng.choice(digits, 14))) if i % 4 else None for i in range(n)]
    table["ssn"] = [f"{rng.integers(100, 600)}-{rng.integers(10, 99)}-{rng.integers(1000, 9999)}" for _ in range(n)]
    table["ip"] = [f"10.{i % 250}.{i // 250}.{i % 200 + 1}" for i in range(n)]
    table["date_of_birth"] = [f"{2024 - a}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}" for a in table["age"]]
    table["home_postcode"] = rng.choice(POSTCODES, n)
    table["notes"] = [
        f"asked for a call back, wrote from carer{i}@clinic.example" if i % 10 == 0 else "follow-up in 3 weeks, 2.5 mg"
        for i in range(n)
    ]
    return table


def with_collection_dates(table: pd.DataFrame, seed: int = 3) -> pd.DataFrame:
    """The table with ``collected_at``: a day up to 900 days before 2025-06-30, one per record."""
    days = np.random.default_rng(seed).integers(0, 900, len(table))
    dated = table.copy()
    dated["collected_at"] = [(COLLECTED_UNTIL - pd.Timedelta(days=int(d))).date().isoformat() for d in days]
    return dated


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with_collection_dates(people_table()).to_csv(out / "patients.csv", index=False)
    (out / "data.toml").write_text(POLICY, encoding="utf-8")
    print(f"wrote {out / 'patients.csv'} and {out / 'data.toml'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/patients_data.py OUT_DIR")
    main(sys.argv[1])
