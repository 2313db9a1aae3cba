"""The guard's upstream client against a raw loopback server that answers in each way HTTP/1.1 allows."""

from __future__ import annotations

import asyncio

import pytest

from membershield.guard.upstream import UpstreamClient, UpstreamError

ANSWERS = {
    b"/length": b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}',
    b"/chunked": b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"ok\r\n8\r\n": true}\r\n0\r\n\r\n',
    b"/eof": b'HTTP/1.0 200 OK\r\n\r\n{"ok": true}',
}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list) -> None:
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        path = head.split(b" ")[1]
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))[15:])
        log.append((path, await reader.readexactly(length)))
        if path == b"/slow":
            await asyncio.sleep(5)
        if path == b"/garbage":
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        else:
            writer.write(ANSWERS.get(path.split(b"?")[0], ANSWERS[b"/length"]))
        await writer.drain()
        if path in (b"/eof", b"/once", b"/garbage"):
            break  # closes the connection: the client must not reuse it
    writer.close()


async def _scenario() -> list:
    log: list = []
    server = await asyncio.start_server(lambda r, w: _serve(r, w, log), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    results = []
    for path in ("/length", "/chunked", "/eof", "/once", "/once"):
        client = UpstreamClient(base + path, timeout=2)
        for _ in range(3):  # the second and third calls reuse the connection, or reconnect when it was closed
            results.append((path, await client.post(b'{"records": [[1]]}')))
        client.close()
    with pytest.raises(UpstreamError, match=r"no answer within 0\.2 s"):
        await UpstreamClient(base + "/slow", timeout=0.2).post(b"{}")
    with pytest.raises(UpstreamError, match="malformed answer"):
        await UpstreamClient(base + "/garbage", timeout=2).post(b"{}")
    server.close()
    with pytest.raises(UpstreamError, match="ConnectionRefusedError"):
        await UpstreamClient(base + "/length", timeout=2).post(b"{}")
    return results, log


def test_every_answer_framing_is_read_and_connections_are_reused_or_replaced():
    results, log = asyncio.run(_scenario())
    assert [answer for _, answer in results] == [(200, b'{"ok": true}')] * 15
    assert all(body == b'{"records": [[1]]}' for path, body in log if path != b"/slow" and path != b"/garbage")


def test_only_http_urls_are_accepted():
    with pytest.raises(ValueError, match="not an http"):
        UpstreamClient("ftp://example.org/x", timeout=1)
