"""`membershield data scan` on real tables: scikit-learn's bundled diabetes study (442 patients) as it is,
and as a people table with known personal data planted in a copy; low-k counts on the study's own age and
sex; duplicates, retention and the policy gate; bad input; scan.html in a real browser."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from membershield.cli import main
from membershield.datascan import scan_table
from tests.test_cli import assert_one_line_error, run_cli
from tests.test_report import ARTIFACTS, CHROMIUM, _browser_or_skip

CLEAN = ["patient_id", "age", "sex", "bmi", "bp", "s1", "s5", "target", "years_experience", "order_number"]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "patients_data.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("patients_data", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


patients = _example()
POSTCODES = patients.POSTCODES
diabetes = patients.diabetes
people_table = patients.people_table


PLANTED = {  # column → (kind, how many were planted)
    "email": ("email", 442 - 148),  # every row but each third
    "phone": ("phone", 442),
    "card": ("card", 442),
    "iban": ("iban", 442 - 111),  # every row but each fourth
    "ssn": ("national_id", 442),
    "ip": ("ip_address", 442),
    "date_of_birth": ("date_of_birth", 442),
    "home_postcode": ("postcode", 442),
    "notes": ("email", 45),  # rows 0, 10, ..., 440
}


@pytest.fixture(scope="module")
def people_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("people") / "people.csv"
    people_table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def people_scan(people_csv: Path) -> dict:
    return scan_table(people_csv, analyzer=None)  # the validators' counts are the ground truth


def by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["columns"]}


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# personal data and tiers


def test_planted_personal_data_is_counted_exactly(people_scan: dict) -> None:
    columns = by_name(people_scan)
    table = people_table()
    for name, (kind, planted) in PLANTED.items():
        assert columns[name]["pii"] == {kind: planted}, name
    assert PLANTED["email"][1] == table["email"].notna().sum() and PLANTED["iban"][1] == table["iban"].notna().sum()
    for name in CLEAN:
        assert columns[name]["pii"] == {}, (name, columns[name]["pii"])


def test_card_numbers_the_csv_reader_sees_as_integers(people_csv: Path, people_scan: dict) -> None:
    typed = pd.read_csv(people_csv)
    assert typed["card"].dtype == np.int64 and typed["order_number"].dtype == np.int64
    from membershield.guard.pii import luhn_valid

    passing = typed["order_number"].astype(str).map(luhn_valid).sum()
    assert 0 < passing < 0.2 * len(typed)  # some order numbers pass Luhn by chance: the column is still no cards
    assert by_name(people_scan)["order_number"]["pii"] == {}


def test_the_clean_study_table_has_no_personal_data(tmp_path: Path) -> None:
    path = tmp_path / "diabetes.csv"
    diabetes().to_csv(path, index=False)
    doc = scan_table(path)
    assert all(c["pii"] == {} for c in doc["columns"])
    assert {c["name"]: c["tier"] for c in doc["columns"] if c["tier"] != "internal"} == {
        "age": "personal",
        "sex": "personal",
    }


def test_tiers_follow_what_was_found_and_the_names(people_scan: dict) -> None:
    tiers = {c["name"]: c["tier"] for c in people_scan["columns"]}
    assert {n for n, t in tiers.items() if t == "protected"} == {"card", "iban", "ssn"}
    assert {n for n, t in tiers.items() if t == "personal"} == {
        "age", "sex", "email", "phone", "ip", "date_of_birth", "home_postcode", "notes"
    }  # fmt: skip
    assert tiers["years_experience"] == tiers["bmi"] == tiers["order_number"] == "internal"


def test_column_facts(people_scan: dict) -> None:
    columns = by_name(people_scan)
    assert set(columns["email"]) == {"name", "tier", "pii", "cardinality", "missing_share"}
    assert columns["email"]["missing_share"] == pytest.approx(148 / 442)
    assert columns["email"]["cardinality"] == 294 and columns["home_postcode"]["cardinality"] == len(POSTCODES)
    assert columns["sex"]["cardinality"] == 2 and columns["iban"]["missing_share"] == pytest.approx(111 / 442)


def test_parquet_gives_the_same_findings(people_scan: dict, tmp_path: Path) -> None:
    path = tmp_path / "people.parquet"
    people_table().to_parquet(path)
    assert by_name(scan_table(path)) == by_name(people_scan)


def test_presidio_findings_join_the_validators_and_the_sample_is_stated(tmp_path: Path) -> None:
    class Finding:
        def __init__(self, kind: str, score: float) -> None:
            self.entity_type, self.score = kind, score

    class Analyzer:  # answers as Presidio's AnalyzerEngine does, for a capitalised "First Last" only
        def analyze(self, text: str, language: str) -> list[Finding]:
            return [Finding("PERSON", 0.85)] if re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", text) else []

    path = tmp_path / "names.csv"
    pd.DataFrame({"who": ["Ada Lovelace", "Alan Turing", "n/a", "Ada Lovelace"], "n": [1, 2, 3, 4]}).to_csv(
        path, index=False
    )
    doc = scan_table(path, analyzer=Analyzer())
    assert by_name(doc)["who"]["pii"] == {"person": 3} and by_name(doc)["n"]["pii"] == {}
    assert doc["detection"]["presidio"] == {"sampled_distinct_values_per_column": 200}
    assert scan_table(path, analyzer=None)["detection"]["presidio"] is None


LOOKALIKES = {  # column → (values that are personal data, lookalikes one checksum or rule away)
    "card": (["4111 1111 1111 1111", "5500-0055-5555-5559"], ["4111 1111 1111 1112", "5500-0055-5555-5558"]),
    "iban": (["GB82WEST12345698765432", "DE89370400440532013000"], ["GB83WEST12345698765432"]),
    "ssn_like": (["123-45-6789"], ["000-12-3456", "666-45-6789", "123-00-6789"]),
    "nino": (["AB 12 34 56 C"], ["AB 12 34 56 E", "GB 12 34 56 A", "QQ 12 34 56 C"]),
    "ip": (["192.168.0.1", "2001:db8::1"], ["999.1.1.1", "1.2.3"]),
    "phone": (["+44 20 7946 0958", "07700900123"], ["0012345678", "12/03/2024", "10:30:00", "1,234.50"]),
    "where": (["SW1A 1AA", "ec1a 1bb", "M5V 3L9", "10115-1234"], ["SW1A1AZZ", "10115"]),  # a ZIP by name only
}


def test_each_validator_decides_by_its_checksum_or_rule(tmp_path: Path) -> None:
    kinds = {"card": "card", "iban": "iban", "ssn_like": "national_id", "nino": "national_id"}
    kinds |= {"ip": "ip_address", "phone": "phone", "where": "postcode"}
    columns = {name: found + lookalike for name, (found, lookalike) in LOOKALIKES.items()}
    rows = max(len(v) for v in columns.values())
    path = tmp_path / "lookalikes.csv"
    pd.DataFrame({name: values + [None] * (rows - len(values)) for name, values in columns.items()}).to_csv(
        path, index=False
    )
    doc = by_name(scan_table(path, analyzer=None))
    for name, (found, _) in LOOKALIKES.items():
        assert doc[name]["pii"] == {kinds[name]: len(found)}, (name, doc[name]["pii"])
    pd.DataFrame({"zip": ["10115", "80331"], "amount": ["10115", "80331"]}).to_csv(path, index=False)
    doc = by_name(scan_table(path, analyzer=None))
    assert doc["zip"]["pii"] == {"postcode": 2} and doc["amount"]["pii"] == {}


def test_dates_of_birth_only_in_a_birth_column_and_only_plausible(tmp_path: Path) -> None:
    path = tmp_path / "dates.csv"
    dates = ["1984-03-02", "02/03/1984", "2999-01-01", "1850-06-01", "unknown"]
    pd.DataFrame({"dob": dates, "visit_date": dates}).to_csv(path, index=False)
    doc = by_name(scan_table(path, analyzer=None, today=date(2025, 1, 1)))
    assert doc["dob"]["pii"] == {"date_of_birth": 2} and doc["visit_date"]["pii"] == {}
    assert doc["dob"]["tier"] == "personal" and doc["visit_date"]["tier"] == "internal"


def test_the_scan_is_what_the_risk_register_and_the_store_read(people_scan: dict, tmp_path: Path) -> None:
    from membershield.risk import load_scan, scan_summary

    path = tmp_path / "scan.json"
    path.write_text(json.dumps(people_scan), encoding="utf-8")
    summary = scan_summary(load_scan(path))
    assert summary["n_rows"] == 442 and summary["n_columns"] == 19
    assert summary["tiers"] == {"public": 0, "internal": 8, "personal": 8, "protected": 3}
    assert set(summary["personal_columns"]) == {n for n, c in by_name(people_scan).items() if c["tier"] != "internal"}
    low = people_scan["low_k"]
    assert summary["low_k"] == {key: low[key] for key in ("k", "quasi_identifiers", "records", "combinations")}
    assert summary["duplicates"] == {"exact": 0, "near": 0}


# --------------------------------------------------------------------------------------------------
# low-k records


def test_low_k_on_the_study_age_and_sex(tmp_path: Path, monkeypatch, capsys) -> None:
    frame = diabetes()
    path = tmp_path / "diabetes.csv"
    frame.to_csv(path, index=False)
    code, out, err = run_cli(
        monkeypatch, capsys, "data", "scan", str(path), "--quasi-identifiers", "age,sex", "--out", str(tmp_path / "o")
    )
    assert code == 0, err
    low = json.loads((tmp_path / "o" / "scan.json").read_text())["low_k"]
    seen = Counter(zip(frame["age"], frame["sex"], strict=True))
    rare = {combination: n for combination, n in seen.items() if n < 5}
    # 13 ages × sexes seen once, 22 twice, 10 three times, 14 four times: 13 + 44 + 30 + 56 records
    assert (low["records"], low["combinations"]) == (143, 59) == (sum(rare.values()), len(rare))
    assert low["records_by_count"] == {"1": 13, "2": 44, "3": 30, "4": 56}
    assert low["grouping"] == {"age": "exact", "sex": "exact"} and low["chosen_by"] == "--quasi-identifiers"
    rows = {r["row"] for r in low["rows"]}
    assert rows == {i for i, key in enumerate(zip(frame["age"], frame["sex"], strict=True)) if key in rare}
    assert "143 records in 59 combinations" in out


def test_low_k_by_hand_on_ten_patients(tmp_path: Path) -> None:
    # ages 59 48 72 24 50 23 36 66 60 29, sexes 2 1 2 1 1 1 2 2 2 1; in decades: (50,2) (40,1) (70,2) (20,1)
    # (50,1) (20,1) (30,2) (60,2) (60,2) (20,1): rows 3, 5, 9 share (20,1), rows 7, 8 share (60,2)
    ten = diabetes().head(10)
    path = tmp_path / "ten.csv"
    ten.to_csv(path, index=False)
    from membershield.datascan import parse_policy

    binned = scan_table(path, parse_policy({"columns": {"age": {"bins": 10}}}), quasi_identifiers=["age", "sex"], k=3)
    low = binned["low_k"]
    assert (low["records"], low["combinations"], low["records_by_count"]) == (7, 6, {"1": 5, "2": 2})
    assert [r["row"] for r in low["rows"]] == [0, 1, 2, 4, 6, 7, 8]
    assert low["rows"][-1] == {"row": 8, "count": 2, "values": {"age": "[60, 70)", "sex": "2.0"}}
    exact = scan_table(path, quasi_identifiers=["age"], k=2)["low_k"]  # listed: every age as it is, all distinct
    assert exact["records"] == 10 and exact["grouping"] == {"age": "exact"}


def test_missing_is_a_value_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    pd.DataFrame({"zip": ["10115", None, None, "10115", "02134"], "x": range(5)}).to_csv(path, index=False)
    low = scan_table(path, quasi_identifiers=["zip"], k=2)["low_k"]
    # the two gaps are one combination seen twice; the ZIP code reads as the file wrote it, leading 0 kept
    assert low["records"] == 1 and low["rows"] == [{"row": 4, "count": 1, "values": {"zip": "02134"}}]
    low = scan_table(path, quasi_identifiers=["zip"], k=3)["low_k"]
    assert (low["records"], low["combinations"], low["records_by_count"]) == (5, 3, {"1": 1, "2": 4})
    assert [r["values"]["zip"] for r in low["rows"]] == ["02134", "10115", None, None, "10115"]


def test_membershield_chooses_and_bins_the_quasi_identifiers(people_scan: dict) -> None:
    low = people_scan["low_k"]
    assert low["quasi_identifiers"] == ["age", "sex", "date_of_birth", "home_postcode"]
    assert low["chosen_by"] == "membershield"
    assert low["grouping"] == {
        "age": "bins of width 10",
        "sex": "exact",
        "date_of_birth": "year",
        "home_postcode": "exact",
    }
    table = people_table()
    keys = list(
        zip(table["age"] // 10, table["sex"], table["date_of_birth"].str[:4], table["home_postcode"], strict=True)
    )
    seen = Counter(keys)
    assert low["records"] == sum(1 for key in keys if seen[key] < 5)


# --------------------------------------------------------------------------------------------------
# duplicates, retention, policy


def test_exact_and_near_copies(tmp_path: Path) -> None:
    table = people_table()
    near = table.iloc[[1, 1]].copy()
    near["patient_id"] = [9001, 9002]  # entered again: new ids
    near["email"] = near["email"].str.upper()
    near["notes"] = ["  Follow-up in 3 weeks 2.5 mg ", near["notes"].iloc[1]]
    near["bmi"] = near["bmi"] * (1 + 1e-7)
    copies = pd.concat([table, table.iloc[[0, 0, 0]], near], ignore_index=True)
    path = tmp_path / "copies.csv"
    copies.to_csv(path, index=False)
    dup = scan_table(path)["duplicates"]
    assert dup["exact"] == {"records": 3, "groups": 1, "rows": [[0, 442, 443, 444]]}
    assert dup["near"]["records"] == 2 and dup["near"]["rows"] == [[1, 445, 446]]
    assert dup["near"]["ignored_columns"] == ["patient_id"]


def _dated(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    table = patients.with_collection_dates(people_table().head(100))
    path = tmp_path / "dated.csv"
    table.to_csv(path, index=False)
    return path, table


def test_retention_fails_a_table_with_expired_records(tmp_path: Path, monkeypatch, capsys) -> None:
    path, table = _dated(tmp_path)
    policy = write_policy(
        tmp_path / "data.toml",
        '[retention]\ncolumn = "collected_at"\nmax_age_days = 730\nas_of = "2025-06-30"\n',
    )
    code, out, err = run_cli(
        monkeypatch, capsys, "data", "scan", str(path), "--policy", str(policy), "--out", str(tmp_path / "o")
    )
    expired = [i for i, d in enumerate(table["collected_at"]) if pd.Timestamp(d) < pd.Timestamp("2023-07-01")]
    assert 0 < len(expired) < len(table)
    assert code == 1, err
    doc = json.loads((tmp_path / "o" / "scan.json").read_text())
    assert doc["retention"]["expired"] == len(expired) and doc["retention"]["expired_rows"] == expired
    assert f"FAIL retention: {len(expired)} record(s) dated more than 730 days before 2025-06-30" in out
    kept = tmp_path / "kept.csv"
    table.drop(index=expired).to_csv(kept, index=False)
    code, out, err = run_cli(
        monkeypatch, capsys, "data", "scan", str(kept), "--policy", str(policy), "--out", str(tmp_path / "k")
    )
    assert code == 0, out + err
    assert "scan passed: 1 checks" in out


def test_policy_limits_gate_the_scan(people_csv: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    strict = write_policy(tmp_path / "strict.toml", 'max_low_k_share = 0.05\nrequire_owner = ["protected"]\n')
    code, out, _ = run_cli(
        monkeypatch, capsys, "data", "scan", str(people_csv), "--policy", str(strict), "--out", str(tmp_path / "s")
    )
    assert code == 1
    fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 2 and "3 column(s) of tier protected without an owner: card, iban, ssn" in fails[1]
    assert "exceeds the limit of 5%" in fails[0]
    owned = write_policy(
        tmp_path / "owned.toml",
        'max_low_k_share = 1.0\nmax_duplicate_share = 0\nrequire_owner = ["protected"]\nk = 2\n'
        + "".join(f'[columns.{c}]\nowner = "payments"\n' for c in ("card", "iban", "ssn"))
        + '[columns.notes]\ntier = "protected"\nowner = "clinic"\n'
        + "[columns.years_experience]\nquasi_identifier = true\n",
    )
    code, out, err = run_cli(
        monkeypatch, capsys, "data", "scan", str(people_csv), "--policy", str(owned), "--out", str(tmp_path / "p")
    )
    assert code == 0, out + err
    doc = json.loads((tmp_path / "p" / "scan.json").read_text())
    assert by_name(doc)["notes"]["tier"] == "protected" and doc["tiers_from_policy"] == ["notes"]
    assert doc["low_k"]["k"] == 2 and "years_experience" in doc["low_k"]["quasi_identifiers"]
    assert doc["owners"]["card"] == "payments" and all(c["passed"] for c in doc["checks"])


def test_the_readme_example(tmp_path: Path, monkeypatch, capsys) -> None:
    # examples/patients_data.py writes the table and policy the README scans; its output is quoted there
    patients.main(str(tmp_path))
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(
        monkeypatch, capsys, "data", "scan", "patients.csv", "--policy", "data.toml", "--quasi-identifiers",
        "age,sex,home_postcode",
    )  # fmt: skip
    assert code == 1
    lines = out.splitlines()
    assert "protected  card: card 442" in lines and "internal   years_experience: -" in lines
    assert "low-k: 431 records in 301 combinations seen < 5 times (age, sex, home_postcode)" in lines
    assert (
        "FAIL records in combinations seen fewer than 5 times: 431 of 442 records (97.51%) exceeds the limit of 5%"
        in lines
    )
    assert "FAIL 2 column(s) of tier protected without an owner: iban, ssn (set [columns.NAME] owner)" in lines
    assert any(line.startswith("FAIL retention: 81 record(s) dated more than 730 days") for line in lines)
    assert lines[-1] == "scan FAILED: 3 of 3 checks"
    binned = tmp_path / "binned.toml"
    binned.write_text((tmp_path / "data.toml").read_text() + "\n[columns.age]\nbins = 10\n", encoding="utf-8")
    code, out, _ = run_cli(
        monkeypatch, capsys, "data", "scan", "patients.csv", "--policy", str(binned), "--quasi-identifiers",
        "age,sex,home_postcode",
    )  # fmt: skip
    assert "low-k: 46 records in 24 combinations seen < 5 times (age, sex, home_postcode)" in out.splitlines()


# --------------------------------------------------------------------------------------------------
# bad input: one line, exit 2


def test_unknown_column_in_the_policy(people_csv: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    policy = write_policy(tmp_path / "p.toml", '[columns.emial]\ntier = "personal"\n')
    code, _, err = run_cli(
        monkeypatch, capsys, "data", "scan", str(people_csv), "--policy", str(policy), "--out", str(tmp_path)
    )
    assert_one_line_error(code, err, "unknown column 'emial'", "[columns.emial]", "did you mean 'email'")
    code, _, err = run_cli(monkeypatch, capsys, "data", "scan", str(people_csv), "--quasi-identifiers", "age,gender")
    assert_one_line_error(code, err, "unknown column 'gender' in --quasi-identifiers")


def test_bad_policy_keys_and_values(people_csv: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    policy = write_policy(tmp_path / "p.toml", 'max_lowk_share = 0.1\n[columns.age]\ntier = "secret"\n')
    code, _, err = run_cli(monkeypatch, capsys, "data", "scan", str(people_csv), "--policy", str(policy))
    assert_one_line_error(
        code, err, "unknown key 'max_lowk_share'", "did you mean 'max_low_k_share'", "tier must be one of"
    )


def test_a_date_column_that_does_not_parse(tmp_path: Path, monkeypatch, capsys) -> None:
    path, table = _dated(tmp_path)
    table.loc[[4, 17], "collected_at"] = ["last spring", "31/02/2024"]
    table.to_csv(path, index=False)
    policy = write_policy(tmp_path / "p.toml", '[retention]\ncolumn = "collected_at"\nmax_age_days = 365\n')
    code, _, err = run_cli(monkeypatch, capsys, "data", "scan", str(path), "--policy", str(policy))
    assert_one_line_error(
        code, err, "'collected_at'", "2 value(s)", "row 4 'last spring'", "row 17 '31/02/2024'", "from 0"
    )


@pytest.mark.parametrize("content", [b"", b"PAR1\x00\x01garbage", None])
def test_an_unreadable_file(tmp_path: Path, monkeypatch, capsys, content: bytes | None) -> None:
    path = tmp_path / ("table.parquet" if content else "table.csv")
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_cli(monkeypatch, capsys, "data", "scan", str(path), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, str(path))


# --------------------------------------------------------------------------------------------------
# scan.html


@pytest.fixture(scope="module")
def scan_html(people_csv: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scan-out")
    policy = write_policy(out / "p.toml", 'max_low_k_share = 0.05\nrequire_owner = ["protected"]\n')
    argv, sys.argv = (
        sys.argv,
        ["membershield", "data", "scan", str(people_csv), "--policy", str(policy), "--out", str(out)],
    )
    try:
        with pytest.raises(SystemExit):
            main()
    finally:
        sys.argv = argv
    return out / "scan.html"


def test_scan_html_is_self_contained(scan_html: Path) -> None:
    html = scan_html.read_text(encoding="utf-8").lower()
    assert "<script" not in html and "<link" not in html and "@import" not in html and "<img" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "url(" not in html


def test_scan_html_in_a_real_browser(scan_html: Path) -> None:
    sync_playwright = _browser_or_skip()
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(scan_html.as_uri(), wait_until="load")
            headline = page.inner_text("#verdict h2")
            tiers = page.eval_on_selector_all("#columns tbody tr", "rows => rows.map(r => r.cells[1].innerText)")
            card = page.inner_text("#columns tbody tr:nth-child(13)")
            rare_rows = page.eval_on_selector_all("#low-k-rows tbody tr", "rows => rows.length")
            fails = page.eval_on_selector_all("#checks .fail", "els => els.length")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "scan.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert headline == "Policy check failed: 2 of 2 checks"
    assert len(tiers) == 19 and sum(t.startswith("protected") for t in tiers) == 3
    assert "card" in card and "card × 442" in card
    assert rare_rows == 50 and fails == 2
    assert (ARTIFACTS / "scan.png").stat().st_size > 10_000
