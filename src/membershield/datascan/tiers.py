"""Sensitivity tiers of columns, and which columns are quasi-identifiers.

Four tiers, from least to most sensitive: ``public`` (published, safe to share), ``internal`` (business
data with nothing about a person found in it: the default), ``personal`` (about an identifiable person)
and ``protected`` (identifiers that open accounts or files, and the special categories of data protection
law: health, ethnicity, religion, sexuality, politics, union membership, biometrics, criminal records).
A column's tier is the highest that what was found in it or its name implies; a policy sets any column's
tier outright. Nothing is inferred ``public``: that a table was published cannot be read off the table.
"""

from __future__ import annotations

from collections.abc import Mapping

from membershield.datascan.detect import BIRTH_WORDS, POSTCODE_WORDS, SSN_WORDS, name_tokens

TIERS = ("public", "internal", "personal", "protected")
PROTECTED_KINDS = {"card", "iban", "national_id", "nrp"}
PERSONAL_KINDS = {"email", "phone", "ip_address", "date_of_birth", "postcode", "person", "location"}
# Identify a person alone: counting their combinations says nothing, every record is already unique.
DIRECT_KINDS = {"email", "phone", "card", "iban", "national_id", "ip_address", "person"}

PROTECTED_WORDS = SSN_WORDS | {
    "passport", "religion", "religious", "faith", "ethnicity", "ethnic", "race", "health", "diagnosis",
    "disease", "medical", "medication", "illness", "sexual", "sexuality", "orientation", "political",
    "politics", "union", "biometric", "fingerprint", "genetic", "genome", "disability", "pregnancy",
    "pregnant", "hiv", "criminal", "conviction", "offence", "offense",
}  # fmt: skip
# Words that describe a person and, together, single one out.
QUASI_WORDS = BIRTH_WORDS | POSTCODE_WORDS | {
    "age", "sex", "gender", "city", "town", "county", "region", "marital", "nationality", "occupation",
    "job", "profession", "employer", "education", "height", "weight", "zipcode",
}  # fmt: skip
DIRECT_WORDS = {
    "name", "surname", "firstname", "lastname", "fullname", "forename", "email", "mail", "phone", "mobile",
    "telephone", "tel", "address", "street", "username", "login", "iban", "card", "licence", "license",
    "ip", "passport",
} | SSN_WORDS  # fmt: skip


def infer_tier(name: str, pii: Mapping[str, int]) -> str:
    """The tier that a column's name and the personal data found in it imply.

    >>> infer_tier("years_experience", {})
    'internal'
    >>> infer_tier("contact", {"email": 3})
    'personal'
    >>> infer_tier("payment", {"card": 10})
    'protected'
    >>> infer_tier("diagnosis_code", {})
    'protected'
    >>> infer_tier("Age", {})
    'personal'
    """
    tokens = name_tokens(name)
    kinds = {kind for kind, count in pii.items() if count > 0}
    if kinds & PROTECTED_KINDS or tokens & PROTECTED_WORDS:
        return "protected"
    if kinds & PERSONAL_KINDS or tokens & (QUASI_WORDS | DIRECT_WORDS):
        return "personal"
    return "internal"


def is_direct_identifier(name: str, pii: Mapping[str, int]) -> bool:
    """Whether a column names a person by itself (an email, a card, a name): not a quasi-identifier.

    >>> is_direct_identifier("email", {}), is_direct_identifier("zip", {"postcode": 5})
    (True, False)
    """
    return bool(name_tokens(name) & DIRECT_WORDS or {k for k, n in pii.items() if n > 0} & DIRECT_KINDS)


def suggested_quasi_identifiers(columns: Mapping[str, tuple[str, Mapping[str, int], float]]) -> list[str]:
    """Columns membershield counts combinations of when none are listed: personal-tier columns that
    describe a person (age, sex, postcode, date of birth, ...) without naming them, and that are not
    unique per record (``columns`` maps name → (tier, pii, share of distinct values)).

    >>> suggested_quasi_identifiers({
    ...     "age": ("personal", {}, 0.1), "email": ("personal", {"email": 9}, 1.0),
    ...     "zip": ("personal", {"postcode": 9}, 0.3), "bmi": ("internal", {}, 0.9),
    ...     "record_id_age": ("personal", {}, 1.0)})
    ['age', 'zip']
    """
    chosen = []
    for name, (tier, pii, distinct_share) in columns.items():
        if tier != "personal" or is_direct_identifier(name, pii) or distinct_share >= 1.0:
            continue
        kinds = {k for k, n in pii.items() if n > 0}
        if name_tokens(name) & QUASI_WORDS or (kinds and kinds <= {"date_of_birth", "postcode", "location"}):
            chosen.append(name)
    return chosen
