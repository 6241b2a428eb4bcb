"""A logging handler that writes lines in batches from a thread of its own.

A service writes about two JSON lines per call (access log, upstream call). Written one by one,
each is a `write` system call on the event loop's thread. `BufferedStreamHandler` formats a
record where it is logged (the formatter reads the request's context variables), queues the
line, and a writer thread writes what has queued up in one `write`:

- **Bounded delay**: a line is written at most `flush_interval` (default 0.1 s) after it was
  queued, sooner once `batch_chars` (64 Ki characters) are waiting.
- **WARNING and above at once**: such a record, and every line queued before it, is written by
  the logging call itself before it returns, so the lines that explain a failure are never
  waiting in memory when it matters.
- **Complete**: no line is ever dropped. `flush()` (called by `logging.shutdown` at a clean exit,
  by `sys.exit` and on SIGTERM's way out) and `close()` write everything queued.
  What a process killed by SIGKILL, or crashed in native code, had queued in its last
  `flush_interval` is lost.
- **Bounded memory, and what a blocked stderr does**: when `max_pending_chars` (1 Mi characters)
  are waiting, because stderr is not being read, the logging call writes them itself and so
  blocks until stderr takes them - as an unbuffered handler would block on every line. The
  service slows to the pace of its log reader instead of growing or losing lines.

Lines keep their order: whoever writes (the thread, a flush, a warning) takes the whole queue
while holding the one write lock.

- **Lines stay whole beside other stderr writers**: a batch is written in pieces of whole lines,
  each at most `PIPE_BUF` (4 KiB) bytes (a longer line on its own). stderr is usually a pipe
  (a container's log collector), and the kernel keeps a pipe write whole only up to `PIPE_BUF`
  bytes: a bigger one that meets a full pipe goes in part by part, and whatever else writes to
  stderr meanwhile lands between the parts, in the middle of a line. Nothing in the process
  orders those other writers with this handler: an uncaught exception's traceback, a warning,
  faulthandler and gRPC's C core write to stderr directly, and with `PYTHONUNBUFFERED=1` (the
  image sets it) so does `sys.stderr` (no buffer lock). A 64 KiB batch is still 16 writes
  instead of hundreds.
- **An uncaught exception's traceback comes after the lines logged before it, whole**:
  `write_tracebacks_in_turn` wraps `sys.excepthook` and `threading.excepthook` so that the
  handler writes what is queued, then the traceback is printed while no batch may be written
  (the hook writes a traceback in many small pieces; a batch written meanwhile by the writer
  thread would land inside its lines, and a line landing there no longer starts a line).
"""

from __future__ import annotations

import contextlib
import logging
import select
import sys
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import TextIO

DEFAULT_FLUSH_INTERVAL = 0.1
DEFAULT_BATCH_CHARS = 64 * 1024
DEFAULT_MAX_PENDING_CHARS = 1024 * 1024
WHOLE_WRITE_BYTES = select.PIPE_BUF
"""The largest write a pipe keeps whole (POSIX: at least 512; Linux: 4096)."""


def _whole_writes(lines: list[str], limit: int = WHOLE_WRITE_BYTES) -> Iterator[str]:
    """`lines` joined into pieces of at most `limit` bytes (UTF-8), each of whole lines; a line
    longer than `limit` is a piece of its own."""
    piece: list[str] = []
    size = 0
    for line in lines:
        length = len(line) if line.isascii() else len(line.encode("utf-8", "backslashreplace"))
        if piece and size + length > limit:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += length
    if piece:
        yield "".join(piece)


class BufferedStreamHandler(logging.StreamHandler[TextIO]):
    """A `StreamHandler` whose lines are written in batches (see the module doc)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        batch_chars: int = DEFAULT_BATCH_CHARS,
        max_pending_chars: int = DEFAULT_MAX_PENDING_CHARS,
    ) -> None:
        super().__init__(stream)
        self._flush_interval = flush_interval
        self._batch_chars = batch_chars
        self._max_pending_chars = max_pending_chars
        self._pending: list[str] = []
        self._pending_chars = 0
        self._queued = threading.Condition(threading.Lock())  # guards _pending, _closed
        # One writer at a time, taking the whole queue. Reentrant: an excepthook printing a
        # traceback holds it (`writing_alone`), and may log.
        self._write_lock = threading.RLock()
        self._closed = False
        self._writer: threading.Thread | None = None

    @property
    def pending_chars(self) -> int:
        """Characters queued and not yet written."""
        return self._pending_chars

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        with self._queued:
            self._pending.append(line)
            self._pending_chars += len(line)
            pending_chars = self._pending_chars
            closed = self._closed
            if len(self._pending) == 1 or pending_chars >= self._batch_chars:
                self._queued.notify()
            if self._writer is None and not closed:
                self._start_writer()
        if (
            record.levelno >= logging.WARNING
            or pending_chars >= self._max_pending_chars
            or closed  # no writer thread any more (a record logged during shutdown)
        ):
            self._write_pending()

    def flush(self) -> None:
        """Write every queued line now, and flush the stream."""
        self._write_pending()

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        with self._queued:
            self._closed = True
            self._queued.notify()
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout=5.0)
        self._write_pending()
        super().close()

    @contextlib.contextmanager
    def writing_alone(self) -> Iterator[None]:
        """Write what is queued, then hold every other write of this handler back until the
        block ends (lines logged meanwhile are queued): for another writer to the stream."""
        with self._write_lock:
            self._write_pending()
            yield

    def _start_writer(self) -> None:
        # Called with `_queued` held: the first line starts the thread, so a handler that never
        # logs (tests replace handlers often) never has one.
        self._writer = threading.Thread(target=self._run_writer, name="log-writer", daemon=True)
        self._writer.start()

    def _run_writer(self) -> None:
        while True:
            with self._queued:
                while not self._pending and not self._closed:
                    self._queued.wait()
                if self._closed:
                    return  # close() writes what is left
                if self._pending_chars < self._batch_chars:
                    # Let a batch gather, up to the bound on a line's delay.
                    self._queued.wait(self._flush_interval)
            self._write_pending()

    def _write_pending(self) -> None:
        with self._write_lock:
            with self._queued:
                lines, self._pending = self._pending, []
                self._pending_chars = 0
            stream = self.stream
            try:
                for piece in _whole_writes(lines):
                    stream.write(piece)
                if hasattr(stream, "flush"):
                    stream.flush()
            except (OSError, ValueError):
                # stderr closed or broken: nowhere left to report it, and the service must not
                # fail a call over its log. (A StreamHandler's handleError would print to the
                # same broken stderr.)
                pass


_in_turn: BufferedStreamHandler | None = None


def write_tracebacks_in_turn(handler: BufferedStreamHandler) -> None:
    """Have uncaught exceptions' tracebacks (main thread and other threads) printed after what
    `handler` has queued, and never interleaved with its batches. The hooks are installed once
    and serve the last handler given."""
    global _in_turn
    first = _in_turn is None
    _in_turn = handler
    if not first:
        return
    printing = sys.excepthook
    printing_thread = threading.excepthook

    def excepthook(
        kind: type[BaseException], value: BaseException, traceback: TracebackType | None
    ) -> None:
        with _writing_alone():
            printing(kind, value, traceback)

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        with _writing_alone():
            printing_thread(args)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


@contextlib.contextmanager
def _writing_alone() -> Iterator[None]:
    handler = _in_turn
    if handler is None:  # pragma: no cover - set before the hooks are installed
        yield
        return
    with handler.writing_alone():
        yield
