"""An open-loop load generator: requests leave on a fixed schedule whether or not earlier ones returned,
so a slow server shows up as latency instead of silently lowering the offered load."""

from __future__ import annotations

import asyncio
import time


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split(b" ", 2)[1])


async def _run(host: str, port: int, request: bytes, rate: float, seconds: float) -> list[tuple[float, int]]:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    results: list[tuple[float, int]] = []
    start = time.perf_counter() + 0.05
    total = int(rate * seconds)

    async def one(due: float) -> None:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = idle.pop() if idle else await asyncio.open_connection(host, port)
        try:
            status = await _exchange(*conn, request)
        except (ConnectionError, asyncio.IncompleteReadError):
            conn[1].close()
            results.append((time.perf_counter() - due, 0))
            return
        # Latency counts from when the request was due, not when it was sent (no coordinated omission).
        results.append((time.perf_counter() - due, status))
        idle.append(conn)

    await asyncio.gather(*(one(start + i / rate) for i in range(total)))
    for _, writer in idle:
        writer.close()
    return results


def run(host: str, port: int, path: str, body: bytes, secret: str, rate: float, seconds: float):
    """Send `rate` POSTs a second for `seconds`; return (latency seconds, status) for each."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return asyncio.run(_run(host, port, request, rate, seconds))
