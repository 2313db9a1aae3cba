"""Asking an endpoint about records: in batches, within a query budget and a rate, with timeouts and
retries with backoff on 429 and 5xx (honouring ``Retry-After``), every answer cached as it arrives.

A query is one record sent: the budget (``max_queries``) and the rate (``queries_per_second``) count
records, the way a provider's quota or the guard's privacy budget does, not HTTP requests.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd

from membershield.endpoint.cache import AnswerCache, record_keys
from membershield.endpoint.formats import Answer, ApiFormat, EndpointError, records_json

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CLASSES_KEY = "__classes__"
ProgressCallback = Callable[[str, int, int], None]


class RequestRefusedError(EndpointError):
    """The endpoint answered 400 or 422: it will not take this request as it is."""


@dataclass
class QueryPolicy:
    batch_size: int = 64
    max_queries: int | None = None
    queries_per_second: float | None = None
    timeout_s: float = 30.0
    retries: int = 5
    max_backoff_s: float = 30.0


@dataclass
class EndpointClient:
    """One endpoint, one format, one budget. ``answers(records)`` gives one answer dict per record."""

    url: str
    api_format: ApiFormat
    headers: dict[str, str]
    policy: QueryPolicy
    cache: AnswerCache | None = None
    sleep: Callable[[float], None] = time.sleep
    sent: int = 0  # records sent so far, against the budget
    classes: list[Any] | None = None  # as the answers name them, when they do
    _client: httpx.Client | None = field(default=None, repr=False)
    _started: float | None = field(default=None, repr=False)
    _plain: bool = field(default=False, repr=False)  # the server refused the format's optional asks once

    def uncached(self, records: pd.DataFrame) -> int:
        """How many distinct records of ``records`` would be sent (the others are cached)."""
        keys = set(record_keys(records_json(records, "records")))
        return len(keys) - (len(self.cache.get(list(keys))) if self.cache else 0)

    def check_budget(self, needed: int, what: str) -> None:
        """Refuse, before the first query, work the budget cannot pay for, naming the number needed."""
        budget = self.policy.max_queries
        if budget is not None and self.sent + needed > budget:
            raise EndpointError(
                f"{what} needs {needed} more queries to {self.url} but --max-queries {budget} leaves"
                f" {budget - self.sent}: raise --max-queries to at least {self.sent + needed}"
                " (answers already fetched stay cached)"
            )

    def answers(self, records: pd.DataFrame, progress: ProgressCallback | None = None) -> list[dict[str, Any]]:
        rows = records_json(records, "records")
        keys = record_keys(rows)
        known = self.cache.get([*keys, CLASSES_KEY]) if self.cache else {}
        if CLASSES_KEY in known:
            self.classes = known.pop(CLASSES_KEY)["classes"]
        todo = list(dict.fromkeys(k for k in keys if k not in known))
        self.check_budget(len(todo), f"scoring {len(records)} records")
        by_key = dict(zip(keys, range(len(keys)), strict=False))
        position = {k: by_key[k] for k in todo}
        size = self.policy.batch_size
        for start in range(0, len(todo), size):
            if progress is not None:
                progress(f"querying {self.url}", start, len(todo))
            batch = todo[start : start + size]
            answer = self._ask(records.iloc[[position[k] for k in batch]])
            fetched = list(zip(batch, answer.rows(), strict=True))
            if answer.classes is not None and self.classes is None:
                self.classes = answer.classes
                fetched.append((CLASSES_KEY, {"classes": answer.classes}))
            known.update(fetched)
            if self.cache is not None:
                self.cache.put(fetched)
        return [known[k] for k in keys]

    def _ask(self, batch: pd.DataFrame) -> Answer:
        self._pace(len(batch))
        body = self.api_format.request(batch)
        plain = self.api_format.plain(body)
        try:
            response = self._post(plain if self._plain and plain is not None else body)
        except RequestRefusedError:
            if plain is None or self._plain:
                raise
            self._plain = True  # once refused, every later batch goes plain: no doubled requests
            response = self._post(plain)
        try:
            payload = response.json()
        except ValueError as exc:
            raise EndpointError(
                f"{self.url} answered {response.status_code} with something that is not JSON:"
                f" {response.text[:120]!r} (is --api-format {self.api_format.name} right?)"
            ) from exc
        self.sent += len(batch)
        return self.api_format.parse(payload, len(batch))

    def _pace(self, n: int) -> None:
        """Wait so that records sent, counting this batch, stay within ``queries_per_second``."""
        rate = self.policy.queries_per_second
        now = time.monotonic()
        if self._started is None:
            self._started = now
        if rate:
            wait = (self.sent + n) / rate - (now - self._started)
            if wait > 0:
                self.sleep(wait)

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        if self._client is None:
            self._client = httpx.Client(timeout=self.policy.timeout_s, headers=self.headers)
        for attempt in range(self.policy.retries + 1):
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as exc:
                if attempt == self.policy.retries:
                    raise EndpointError(
                        f"cannot reach {self.url}: {type(exc).__name__}: {exc} (is the server running, and"
                        " is --model its full URL?)"
                    ) from exc
                self.sleep(self._backoff(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.policy.retries:
                self.sleep(self._backoff(attempt, response.headers.get("retry-after")))
                continue
            return _checked(response, self.url, self.api_format)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        return min(retry_after_seconds(retry_after) or 0.25 * 2**attempt, self.policy.max_backoff_s)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.cache is not None:
            self.cache.close()


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks us to wait: a number of seconds or an HTTP date.

    >>> retry_after_seconds("3")
    3.0
    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412480.0)
    5.0
    >>> retry_after_seconds("soon") is None
    True
    """
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(when - (time.time() if now is None else now), 0.0)


def _checked(response: httpx.Response, url: str, api_format: ApiFormat) -> httpx.Response:
    status = response.status_code
    if status < 400:
        return response
    detail = response.text[:160].replace("\n", " ")
    if status in (401, 403):
        hint = "check the credentials given with --header (e.g. 'Authorization: Bearer ${API_KEY}')"
    elif status == 404:
        hint = f"check --model: a {api_format.name} endpoint's path usually ends with {api_format.default_path}"
    elif status == 413:
        hint = "the batch is too large for the server: lower --batch-size"
    elif status in (400, 422):
        hint = f"the server rejected the records: check --api-format {api_format.name} and the feature columns"
    elif status in RETRY_STATUSES:
        hint = "the server kept failing after every retry: try later or lower --queries-per-second"
    else:
        hint = "see the server's log"
    error = RequestRefusedError if status in (400, 422) else EndpointError
    raise error(f"{url} answered {status}: {detail} ({hint})")
