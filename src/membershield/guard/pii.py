"""Personal data in text outputs: find and redact emails, phone numbers, payment cards (Luhn), US social
security numbers, IBANs (ISO 13616 mod-97) and IP addresses.

Every function is pure. Candidates are found with patterns and then validated (checksums, ranges), so a
16-digit order number that fails the Luhn check is left alone while a real card number is redacted.
Where Presidio's analyzer is installed together with a spaCy English model, its findings (names,
locations and the like, which patterns cannot find) are redacted as well; these validators always run.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

# -- validators ------------------------------------------------------------------------------------


def luhn_valid(number: str) -> bool:
    """Luhn checksum of the digits in ``number`` (separators ignored); needs 13 to 19 digits."""
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(value: str) -> bool:
    """ISO 13616: known country length and (rearranged, letters as 10..35) number mod 97 == 1."""
    iban = re.sub(r"[\s-]", "", value).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", iban):
        return False
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def ssn_valid(value: str) -> bool:
    """US SSN ``AAA-GG-SSSS``: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    digits = re.sub(r"\D", "", value)
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def ip_valid(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def phone_valid(value: str) -> bool:
    """9 to 15 digits (E.164 allows 15; 7 or 8 with a ``+`` or an area code in brackets), not all one digit,
    and not a date such as 2024-01-05."""
    digits = re.sub(r"\D", "", value)
    if re.fullmatch(r"\d{4}[-./]\d{2}[-./]\d{2}|\d{2}[-./]\d{2}[-./]\d{4}", value.strip()):
        return False
    shortest = 7 if value.lstrip().startswith(("+", "(")) else 9
    return shortest <= len(digits) <= 15 and len(set(digits)) > 1


# -- patterns --------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){10,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?![\w])")

# Checked in this order: a span already redacted is not looked at again.
DETECTORS: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = [
    ("EMAIL", _EMAIL, lambda _: True),
    ("IBAN", _IBAN, iban_valid),
    ("CREDIT_CARD", _CARD, luhn_valid),
    ("US_SSN", _SSN, ssn_valid),
    ("IP_ADDRESS", _IPV4, ip_valid),
    ("IP_ADDRESS", _IPV6, ip_valid),
    ("PHONE", _PHONE, phone_valid),
]


def find_pii(text: str) -> list[tuple[str, int, int]]:
    """Non-overlapping ``(kind, start, end)`` spans of validated personal data, in text order."""
    taken: list[tuple[str, int, int]] = []
    for kind, pattern, valid in DETECTORS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for _, s, e in taken):
                continue
            if valid(match.group()):
                taken.append((kind, start, end))
    return sorted(taken, key=lambda span: span[1])


PRESIDIO_MIN_SCORE = 0.5
SPACY_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")


def presidio_analyzer() -> Any | None:
    """Presidio's ``AnalyzerEngine`` on an installed spaCy English model, or None when either is missing.

    Presidio's default configuration downloads ``en_core_web_lg`` when it is absent; the engine is built
    here on a model that is already installed, so nothing is ever fetched at run time.
    """
    from importlib.util import find_spec

    if find_spec("presidio_analyzer") is None or find_spec("spacy") is None:
        return None
    import spacy.util

    model = next((name for name in SPACY_MODELS if spacy.util.is_package(name)), None)
    if model is None:
        return None
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    nlp = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    ).create_engine()
    return AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])


def _with_analyzer(text: str, spans: list[tuple[str, int, int]], analyzer: Any) -> list[tuple[str, int, int]]:
    """``spans`` plus the analyzer's confident findings that overlap none of them (most confident first)."""
    taken = list(spans)
    found = sorted(analyzer.analyze(text=text, language="en"), key=lambda r: -r.score)
    for result in found:
        if result.score < PRESIDIO_MIN_SCORE:
            continue
        if any(result.start < e and s < result.end for _, s, e in taken):
            continue
        taken.append((result.entity_type, result.start, result.end))
    return sorted(taken, key=lambda span: span[1])


def redact(text: str, analyzer: Any | None = None) -> tuple[str, Counter[str]]:
    """``text`` with every span of :func:`find_pii` (and of ``analyzer``, a Presidio ``AnalyzerEngine``, when
    given) replaced by ``[KIND]``, and the count of each kind."""
    spans = find_pii(text)
    if analyzer is not None:
        spans = _with_analyzer(text, spans, analyzer)
    out, last, counts = [], 0, Counter()
    for kind, start, end in spans:
        out.append(text[last:start])
        out.append(f"[{kind}]")
        last = end
        counts[kind] += 1
    out.append(text[last:])
    return "".join(out), counts
