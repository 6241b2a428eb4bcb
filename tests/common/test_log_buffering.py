"""`BufferedStreamHandler`: lines written in batches, in order, none lost, memory bounded."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.common.log_buffering import BufferedStreamHandler
from services.common.logging import JsonFormatter

ROOT = Path(__file__).resolve().parents[2]
_A_MINUTE = 60.0  # a flush interval no test waits for
MakeLogger = Callable[[BufferedStreamHandler], logging.Logger]


class _GatedStream(io.StringIO):
    """A stream whose writes wait until `open` is set: stderr that nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.writes = 0

    def write(self, text: str) -> int:
        self.open.wait()
        self.writes += 1
        return super().write(text)


@pytest.fixture
def make_logger() -> Iterator[MakeLogger]:
    made: list[tuple[logging.Logger, BufferedStreamHandler]] = []

    def make(handler: BufferedStreamHandler) -> logging.Logger:
        logger = logging.getLogger(f"aicreds.test.buffered.{len(made)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.handlers[:] = [handler]
        made.append((logger, handler))
        return logger

    yield make
    for logger, handler in made:
        handler.close()
        logger.handlers.clear()


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10.0
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_info_lines_wait_and_a_warning_writes_them_all_in_order(make_logger: MakeLogger) -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, flush_interval=_A_MINUTE)
    log = make_logger(handler)
    for n in range(5):
        log.info("line %d", n)
    assert stream.getvalue() == ""  # batched: a minute's interval has not passed
    assert handler.pending_chars == len("line 0\n") * 5
    log.warning("trouble")
    # The warning's call returned only after it, and everything before it, was written.
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(5)] + ["trouble"]
    assert handler.pending_chars == 0


def test_a_queued_line_is_written_by_the_thread_without_any_flush(make_logger: MakeLogger) -> None:
    stream = io.StringIO()
    log = make_logger(BufferedStreamHandler(stream, flush_interval=0.05))
    log.info("soon")
    _eventually(lambda: stream.getvalue() == "soon\n", "the writer thread never wrote the line")


def test_a_full_batch_is_written_before_the_interval(make_logger: MakeLogger) -> None:
    stream = io.StringIO()
    log = make_logger(BufferedStreamHandler(stream, flush_interval=_A_MINUTE, batch_chars=64))
    for n in range(20):
        log.info("a line of some length, number %02d", n)
    expected = [f"a line of some length, number {n:02d}" for n in range(20)]
    _eventually(lambda: stream.getvalue().splitlines() == expected, "a full batch stayed queued")


def test_flush_and_close_write_everything(make_logger: MakeLogger) -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, flush_interval=_A_MINUTE)
    log = make_logger(handler)
    log.info("one")
    handler.flush()
    assert stream.getvalue() == "one\n"
    log.info("two")
    handler.close()
    assert stream.getvalue() == "one\ntwo\n"
    log.info("three")  # logged during shutdown, after logging.shutdown closed the handler
    assert stream.getvalue() == "one\ntwo\nthree\n"


def test_a_blocked_stream_blocks_the_logger_at_the_bound_and_loses_nothing(
    make_logger: MakeLogger,
) -> None:
    stream = _GatedStream()
    bound = 1000
    handler = BufferedStreamHandler(
        stream, flush_interval=0.01, batch_chars=100, max_pending_chars=bound
    )
    log = make_logger(handler)
    line = "x" * 49  # 50 characters with the newline
    high_water = 0

    def log_many() -> None:
        nonlocal high_water
        for n in range(200):
            log.info("%s %03d", line, n)
            high_water = max(high_water, handler.pending_chars)

    logging_thread = threading.Thread(target=log_many)
    logging_thread.start()
    logging_thread.join(timeout=0.5)
    # stderr takes nothing: the logging calls wait once the bound is reached, memory stays put.
    assert logging_thread.is_alive()
    assert handler.pending_chars <= bound + 54
    stream.open.set()
    logging_thread.join(timeout=10.0)
    assert not logging_thread.is_alive()
    handler.flush()
    assert stream.getvalue().splitlines() == [f"{line} {n:03d}" for n in range(200)]
    assert high_water <= bound + 54
    assert stream.writes < 200  # batched: far fewer writes than lines


def test_a_broken_stream_does_not_fail_the_logging_call(make_logger: MakeLogger) -> None:
    stream = io.StringIO()
    log = make_logger(BufferedStreamHandler(stream, flush_interval=_A_MINUTE))
    stream.close()
    log.info("nowhere to go")
    log.error("nowhere either")  # written at once: the closed stream's error is swallowed


_EXITS = {
    "returns": "",
    "sys.exit": "sys.exit(3)",
    "raises": "raise RuntimeError('boom')",
}


@pytest.mark.parametrize("ending", sorted(_EXITS))
def test_a_process_that_exits_writes_every_line(ending: str) -> None:
    program = "\n".join(
        [
            "import logging, sys",
            "from services.common.logging import configure_logging",
            "configure_logging('test', 'INFO')",
            "log = logging.getLogger('aicreds.test')",
            "for n in range(2000):",
            "    log.info('line', extra={'fields': {'n': n}})",
            _EXITS[ending],
        ]
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")])}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    lines = [json.loads(text) for text in done.stderr.splitlines() if text.startswith("{")]
    assert [line["n"] for line in lines] == list(range(2000))
    assert all(line["service"] == "test" and line["message"] == "line" for line in lines)


def test_the_lines_are_the_formatters_own(make_logger: MakeLogger) -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, flush_interval=_A_MINUTE)
    handler.setFormatter(JsonFormatter("router"))
    log = make_logger(handler)
    log.info("rpc", extra={"fields": {"code": "OK", "ms": 1.5}})
    handler.flush()
    line = json.loads(stream.getvalue())
    assert (line["service"], line["message"], line["code"], line["ms"]) == (
        "router",
        "rpc",
        "OK",
        1.5,
    )


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_another_stderr_writer_never_lands_inside_a_line(unbuffered: str) -> None:
    """stderr is a pipe read slower than lines come, and another thread writes to it too (as an
    uncaught exception's traceback is written, or a library's warning). With PYTHONUNBUFFERED=1
    (the image sets it) nothing but the kernel orders the writes, and a pipe keeps only writes
    of up to PIPE_BUF bytes whole: a batch must never be one bigger write."""
    program = "\n".join(
        [
            "import logging, sys, threading, time",
            "from services.common.logging import configure_logging",
            "configure_logging('test', 'INFO')",
            "log = logging.getLogger('aicreds.test')",
            "def interlope():",
            "    for n in range(300):",
            "        sys.stderr.write(f'Traceback {n:03d}: a whole line\\n')",
            "        time.sleep(0.001)",
            "other = threading.Thread(target=interlope)",
            "other.start()",
            "for n in range(4000):",
            "    log.info('line', extra={'fields': {'n': n}})",
            "    if n % 100 == 0: time.sleep(0.005)",
            "other.join()",
        ]
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")]),
        "PYTHONUNBUFFERED": unbuffered,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", program], env=env, stderr=subprocess.PIPE, text=True
    )
    assert child.stderr is not None
    texts = []
    with child.stderr:
        while text := child.stderr.readline(8192):  # a slow reader: the pipe is often full
            texts.append(text.rstrip("\n"))
            if len(texts) % 50 == 0:
                time.sleep(0.002)
    assert child.wait(timeout=60) == 0
    assert [t for t in texts if t.startswith("Traceback")] == [
        f"Traceback {n:03d}: a whole line" for n in range(300)
    ]
    lines = [json.loads(text) for text in texts if text.startswith("{")]
    assert [line["n"] for line in lines] == list(range(4000))


@pytest.mark.parametrize("where", ["main", "thread"])
def test_an_uncaught_exceptions_traceback_is_written_whole_after_the_lines_before_it(
    where: str,
) -> None:
    """The last lines are still queued when the traceback is printed (in pieces: the excepthook
    writes `RuntimeError`, `: `, `boom` one by one). Written meanwhile by the writer thread, a
    queued line landed inside the traceback's last line, and was lost to a reader of JSON lines
    (why test_a_process_that_exits_writes_every_line[raises] failed under load)."""
    raising = {
        "main": ["raise RuntimeError('boom')"],
        "thread": [
            "def fail():",
            "    raise RuntimeError('boom')",
            "failing = threading.Thread(target=fail)",
            "failing.start()",
            "failing.join()",
        ],
    }[where]
    program = "\n".join(
        [
            "import logging, sys, threading",
            "from services.common.logging import configure_logging",
            "configure_logging('test', 'INFO')",
            "log = logging.getLogger('aicreds.test')",
            "for n in range(3000):",
            "    log.info('line', extra={'fields': {'n': n}})",
            *raising,
        ]
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")]),
        "PYTHONUNBUFFERED": "1",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", program], env=env, stderr=subprocess.PIPE, text=True
    )
    assert child.stderr is not None
    texts = []
    with child.stderr:
        while text := child.stderr.readline(8192):  # a slow reader: the pipe is often full
            texts.append(text.rstrip("\n"))
            if len(texts) % 20 == 0:
                time.sleep(0.001)
    child.wait(timeout=60)
    lines = [json.loads(text) for text in texts if text.startswith("{")]
    assert [line["n"] for line in lines] == list(range(3000))
    assert "RuntimeError: boom" in texts
    assert texts.index("RuntimeError: boom") == len(texts) - 1  # after every queued line
