"""A TCP proxy that stands for the distance between two regions: every chunk of bytes, either
way, is delivered rtt/2 after it arrived, so a request and its answer cost one round trip time
(RTT) however many bytes they carry, and chunks sent back to back (pipelined) still overlap.

It also counts, on the wire, what crosses it: PostgreSQL round trips, as
tests/checkout_api/test_round_trips.py counts them from libpq's trace. Each Query or Sync a
client sends is answered by exactly one ReadyForQuery ('Z'), so the ReadyForQuery messages
coming back from the server are the round trips, BEGIN, COMMIT and pings included, whatever
code path sent them. A new connection's start-up ends with one too; `connections` says how
many were opened, so a measurement can tell the two apart.

Run as a process (`python -m infra.local.delay_proxy --listen-port ... --target-port ...
--control-port ... --rtt-ms 80`), it answers a little HTTP on its control port:
`GET /stats` -> {"rtt_ms", "round_trips", "connections", "open"}, `POST /rtt/<ms>` changes the
delay, `POST /reset` zeroes the counters. `DelayProxy` is the same thing in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# Bytes read per chunk: a PostgreSQL message of a checkout fits easily; a larger one is just
# more chunks, each delayed alike.
CHUNK_BYTES = 65536
# PostgreSQL's ReadyForQuery message type: the end of one round trip.
READY_FOR_QUERY = ord("Z")
# Bytes of a backend message header: type (1) + length (4, counting itself).
HEADER_BYTES = 5


@dataclass
class Counters:
    round_trips: int = 0
    connections: int = 0
    open: int = 0


class BackendCounter:
    """Splits the server's byte stream into messages and counts the ReadyForQuery ones."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._buffer = b""
        self._skip = 0  # bytes left of the message being passed over
        self._first = True

    def feed(self, data: bytes) -> None:
        if self._first:
            self._first = False
            if data[:1] in (b"N", b"S") and len(data) == 1:
                return  # the one-byte answer to an SSLRequest/GSSENCRequest: not a message
        while data:
            if self._skip:
                taken = min(self._skip, len(data))
                self._skip -= taken
                data = data[taken:]
                continue
            self._buffer += data
            data = b""
            while len(self._buffer) >= HEADER_BYTES:
                kind = self._buffer[0]
                (length,) = struct.unpack("!I", self._buffer[1:HEADER_BYTES])
                if kind == READY_FOR_QUERY:
                    self._counters.round_trips += 1
                whole = 1 + length
                if len(self._buffer) >= whole:
                    self._buffer = self._buffer[whole:]
                else:
                    self._skip = whole - len(self._buffer)
                    self._buffer = b""


class Proxy:
    """The proxy on the running event loop: `serve()` until cancelled."""

    def __init__(
        self, listen_port: int, target_port: int, rtt_ms: float, host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.listen_port = listen_port
        self.target_port = target_port
        self.rtt_ms = rtt_ms
        self.counters = Counters()

    def stats(self) -> dict[str, float | int]:
        c = self.counters
        return {
            "rtt_ms": self.rtt_ms,
            "round_trips": c.round_trips,
            "connections": c.connections,
            "open": c.open,
        }

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counter: BackendCounter | None,
    ) -> None:
        """Copy one direction, each chunk delivered rtt/2 after it arrived, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                if counter is not None and data:
                    counter.feed(data)
                await queue.put((time.monotonic() + self.rtt_ms / 2000, data))
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()
            with contextlib.suppress(Exception):
                writer.close()

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                self.host, self.target_port
            )
        except OSError:
            client_writer.close()  # the target is down: the client sees a refused session
            return
        for stream in (client_writer, server_writer):
            sock = stream.get_extra_info("socket")
            if sock is not None:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.counters.connections += 1
        self.counters.open += 1
        try:
            await asyncio.gather(
                self._pump(client_reader, server_writer, None),
                self._pump(server_reader, client_writer, BackendCounter(self.counters)),
                return_exceptions=True,
            )
        finally:
            self.counters.open -= 1

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """GET /stats, POST /rtt/<ms>, POST /reset: enough HTTP for httpx and a health check."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path = head.split(b" ", 2)[:2]
            status, body = "200 OK", b""
            if method == b"POST" and path.startswith(b"/rtt/"):
                self.rtt_ms = float(path[len(b"/rtt/") :])
            elif method == b"POST" and path == b"/reset":
                self.counters.round_trips = self.counters.connections = 0
            elif not (method == b"GET" and path in (b"/stats", b"/health")):
                status = "404 Not Found"
            body = json.dumps(self.stats()).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def serve(
        self, control_port: int | None = None, listening: Callable[[], None] = lambda: None
    ) -> None:
        """Serve until cancelled; `listening()` is called once the ports accept connections."""
        servers = [await asyncio.start_server(self._connection, self.host, self.listen_port)]
        if control_port is not None:
            servers.append(await asyncio.start_server(self._control, self.host, control_port))
        listening()
        try:
            await asyncio.gather(*(s.serve_forever() for s in servers))
        finally:
            for server in servers:
                server.close()


class DelayProxy:
    """The proxy in a background thread of this process (tests, small tools)."""

    def __init__(self, listen_port: int, target_port: int, rtt_ms: float = 0.0) -> None:
        self.proxy = Proxy(listen_port, target_port, rtt_ms)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._task: asyncio.Future | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self.proxy.serve(listening=self._ready.set))
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        # The connections' pumps still run: end them on this loop before it goes.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the delay proxy did not listen on {self.proxy.listen_port}")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)

    @property
    def counters(self) -> Counters:
        return self.proxy.counters

    def set_rtt(self, rtt_ms: float) -> None:
        self.proxy.rtt_ms = rtt_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.rtt_ms < 0:
        parser.error("--rtt-ms must be >= 0")
    proxy = Proxy(args.listen_port, args.target_port, args.rtt_ms)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(proxy.serve(args.control_port))


if __name__ == "__main__":
    main()
