"""A network backend on plain asyncio transports (uvloop's, in the router process), with
httpcore's interface (`httpcore.AsyncNetworkBackend`, its streams and its errors).

httpcore's default backend goes through anyio: every read and write of a request enters cancel
scopes, looks up the running loop and the async library several times, and yields to the loop
once more per send. This backend is a `asyncio.Protocol` that buffers what arrives and a stream
that hands it to the HTTP/1.1 connection (`http11.py`), so a request costs a few method calls
per read or write.

- **Connecting** goes to the address given, which `EgressNetworkBackend` has already checked
  (it never passes a name down), bounded by the connect timeout.
- **TLS** is `loop.start_tls` on the connected transport, with the `ssl.SSLContext` and the
  server name the caller passes (the upstream's original host name, for SNI and for checking
  its certificate), bounded by the same timeout.
- **Writes** are held until the next read, up to 64 KiB: an HTTP/1.1 client always reads the
  answer after writing a request, so a request's head and a small body leave in one send.
- **Reads** return everything that arrived since the last read, as one piece, up to
  `max_bytes` (so that the HTTP/1.1 parser sees it at once: `http11.py`); reading from the
  socket pauses while more than 256 KiB wait to be read. `is_readable` (asked of an idle
  pooled connection: anything there means the server closed it) is answered from that buffer,
  without a syscall.
- **Timeouts** passed by the connection are honoured (ReadTimeout, WriteTimeout, ConnectTimeout);
  errors are httpcore's (ConnectError, ReadError, WriteError), as the anyio backend raises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import httpcore

NetworkBackend = httpcore.AsyncNetworkBackend
"""What connects to a checked upstream address (`UpstreamClient(network_backend=...)`)."""

_HOLD_WRITES = 64 * 1024  # held writes larger than this are sent at once
_READ_HIGH = 256 * 1024  # pause reading from the socket above this many unread bytes
_READ_LOW = 64 * 1024  # and resume below this


class _BufferingProtocol(asyncio.Protocol):
    """Keeps what the socket delivers until the stream reads it; wakes one waiting reader."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.lost: Exception | None = None  # why the connection was lost, if with an error
        self.reading_paused = False
        self.read_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _READ_HIGH and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake_reader()
        return None  # let the transport close: this client never half-closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.lost = exc
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def _wait(waiter: asyncio.Future[None], timeout: float | None) -> None:
    """Wait for `waiter`; TimeoutError after `timeout` seconds.

    A timer that fails the waiter, not `asyncio.timeout` (which looks up the current task and
    cancels and uncancels it): this runs on every read of every call.
    """
    if timeout is None:
        await waiter
        return
    timer = waiter.get_loop().call_later(timeout, _time_out, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection, as the HTTP/1.1 connection reads and writes it."""

    def __init__(self, transport: asyncio.Transport, protocol: _BufferingProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._held: list[bytes] = []
        self._held_size = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._held:
            self._send_held()
        protocol = self._protocol
        while not protocol.chunks:
            if protocol.eof:
                if protocol.lost is not None:
                    raise httpcore.ReadError("the connection was lost")
                return b""
            waiter = protocol.read_waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(waiter, timeout)
            except TimeoutError:
                raise httpcore.ReadTimeout("no data arrived in time") from None
            finally:
                protocol.read_waiter = None
        chunks = protocol.chunks
        if len(chunks) == 1 or len(chunks[0]) >= max_bytes:
            chunk = chunks.popleft()
        else:  # everything that arrived since the last read, as one piece
            taken = [chunks.popleft()]
            size = len(taken[0])
            while chunks and size + len(chunks[0]) <= max_bytes:
                size += len(chunks[0])
                taken.append(chunks.popleft())
            chunk = b"".join(taken)
        if len(chunk) > max_bytes:
            chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        protocol.buffered -= len(chunk)
        if protocol.reading_paused and protocol.buffered < _READ_LOW:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._held.append(buffer)
        self._held_size += len(buffer)
        if self._held_size <= _HOLD_WRITES:
            return
        self._send_held()
        protocol = self._protocol
        while protocol.writing_paused and not protocol.eof:
            waiter = protocol.drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(waiter, timeout)
            except TimeoutError:
                raise httpcore.WriteTimeout("the upstream did not take the data in time") from None
            finally:
                protocol.drain_waiter = None
        if protocol.eof:
            raise httpcore.WriteError("the connection was lost")

    def _send_held(self) -> None:
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._held_size = 0
        if not self._transport.is_closing():
            # A lost connection shows on the read that follows.
            self._transport.write(data)

    async def aclose(self) -> None:
        # At once, without waiting for a TLS close_notify or for held data (as httpcore's anyio
        # backend does): a connection is closed when it is broken, expired or abandoned.
        self._held.clear()
        self._transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.abort()
            raise httpcore.ConnectTimeout("the TLS handshake timed out") from None
        except (ssl.SSLError, OSError) as err:
            self._transport.abort()
            raise httpcore.ConnectError(f"TLS handshake failed: {_tls_reason(err)}") from None
        if transport is None:  # the connection was closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = transport
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return bool(self._protocol.chunks) or self._protocol.eof
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


def _tls_reason(err: BaseException) -> str:
    """A short public reason (ssl's own names, e.g. CERTIFICATE_VERIFY_FAILED)."""
    reason = getattr(err, "reason", None)
    return str(reason) if reason else type(err).__name__


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Connects with `loop.create_connection` to an IP address (never a name)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(timeout):
                if socket_options:
                    sock = await _connected_socket(host, port, local_address, socket_options)
                    transport, protocol = await loop.create_connection(
                        _BufferingProtocol, sock=sock
                    )
                else:
                    local = (local_address, 0) if local_address else None
                    transport, protocol = await loop.create_connection(
                        _BufferingProtocol, host, port, local_addr=local
                    )
        except TimeoutError:
            if sock is not None:
                sock.close()
            raise httpcore.ConnectTimeout(f"connecting to {host} port {port} timed out") from None
        except OSError:
            if sock is not None:
                sock.close()
            raise httpcore.ConnectError(f"could not connect to {host} port {port}") from None
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not supported")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connected_socket(
    host: str, port: int, local_address: str | None, options: Iterable[Any]
) -> socket.socket:
    """A socket with `options` set (SOL, NAME, value), connected to the IP address `host`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        for option in options:
            sock.setsockopt(*option)
        sock.setblocking(False)
        if local_address:
            sock.bind((local_address, 0))
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock
