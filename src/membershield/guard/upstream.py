"""A small asyncio HTTP/1.1 client for the one upstream endpoint the guard forwards to.

It keeps connections alive and reuses them, and does nothing else: one POST with a JSON body, one answer
read by ``Content-Length``, chunked transfer coding or end of stream. General clients spend about a
millisecond of Python per call on features the guard never uses (redirects, cookies, auth flows, HTTP/2
negotiation); here a forwarded call costs a socket write and a read, which keeps the latency the guard
adds well under its 2 ms target.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 64 << 20
MAX_IDLE_CONNECTIONS = 32


class UpstreamError(Exception):
    """The upstream could not be reached or answered something that is not HTTP; one line."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class UpstreamClient:
    """POSTs JSON to ``url`` over kept-alive connections; :meth:`post` returns ``(status, body)``."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url}")
        self.url = url
        self.timeout = timeout
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        path = parts.path or "/"
        target = f"{path}?{parts.query}" if parts.query else path
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
            "Accept: application/json\r\nContent-Length: "
        ).encode("latin-1")
        self._idle: list[_Connection] = []

    async def post(self, body: bytes) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(body)
        except TimeoutError as exc:
            raise UpstreamError(f"no answer within {self.timeout:g} s") from exc

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        request = self._head + str(len(body)).encode() + b"\r\n\r\n" + body
        while self._idle:
            # A kept-alive connection may have been closed by the server since its last use; that shows as
            # a reset or an end of stream before any byte of an answer, and the call is made again.
            connection = self._idle.pop()
            try:
                return await self._exchange(connection, request)
            except (_StaleConnectionError, ConnectionError):
                continue
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        except OSError as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc.strerror or exc}") from exc
        try:
            return await self._exchange(_Connection(reader, writer), request)
        except _StaleConnectionError as exc:
            raise UpstreamError("the connection was closed before an answer") from exc
        except ConnectionError as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc.strerror or exc}") from exc

    async def _exchange(self, connection: _Connection, request: bytes) -> tuple[int, bytes]:
        """One call on ``connection``; it goes back to the idle pool only after a complete answer."""
        try:
            status, answer, keep = await self._read_answer(connection, request)
        except (_StaleConnectionError, ConnectionError):
            connection.close()
            raise
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            connection.close()
            raise UpstreamError(f"malformed answer: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
        except BaseException:
            connection.close()  # cancelled (timeout) half-way: the stream is in an unknown state
            raise
        if keep and len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append(connection)
        else:
            connection.close()
        return status, answer

    async def _read_answer(self, connection: _Connection, request: bytes) -> tuple[int, bytes, bool]:
        reader, writer = connection.reader, connection.writer
        writer.write(request)
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _StaleConnectionError from exc
            raise
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") or not status_line[1].isdigit():
            raise ValueError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
        status = int(status_line[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep = status_line[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            answer = await self._chunked(reader)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if not 0 <= length <= MAX_RESPONSE_BYTES:
                raise ValueError(f"answer of {length} bytes is over the limit of {MAX_RESPONSE_BYTES}")
            answer = await reader.readexactly(length)
        else:
            answer = await reader.read(MAX_RESPONSE_BYTES + 1)
            while len(answer) <= MAX_RESPONSE_BYTES and not reader.at_eof():
                more = await reader.read(MAX_RESPONSE_BYTES + 1 - len(answer))
                if not more:
                    break
                answer += more
            if len(answer) > MAX_RESPONSE_BYTES:
                raise ValueError(f"answer over the limit of {MAX_RESPONSE_BYTES} bytes")
            keep = False
        return status, answer, keep

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailer fields carry nothing the guard uses
                return b"".join(parts)
            total += size
            if total > MAX_RESPONSE_BYTES:
                raise ValueError(f"answer over the limit of {MAX_RESPONSE_BYTES} bytes")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class _StaleConnectionError(Exception):
    """A reused connection ended before the first byte of an answer."""
