"""Tests for fangwire.logs: JSON formatting with redaction, the live log hub and logging setup."""

from __future__ import annotations

import io
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Iterator

import anyio
import pytest

from fangwire.logs import (
    JsonFormatter,
    LogHub,
    LogRecordView,
    Subscription,
    TooManySubscribers,
    configure_logging,
    level_number,
    log_fields,
    request_id_var,
)
from fangwire.redaction import Redactor

SECRET = "hunter2-very-secret"
TOKEN = "sk-live-0123456789"
TIMEOUT = 5

_names = itertools.count()


@pytest.fixture
def redactor() -> Redactor:
    return Redactor([SECRET, TOKEN])


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A private logger under ``fangwire`` that does not propagate; handlers removed afterwards."""
    log = logging.getLogger(f"fangwire.tests.logs{next(_names)}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.handlers.clear()
    log.setLevel(logging.NOTSET)
    log.propagate = True


@pytest.fixture
def hub(redactor: Redactor, logger: logging.Logger) -> Iterator[LogHub]:
    log_hub = LogHub(redactor, max_subscribers=4, queue_size=50, backlog=20)
    logger.addHandler(log_hub.handler)
    yield log_hub
    logger.removeHandler(log_hub.handler)


def json_lines(redactor: Redactor, logger: logging.Logger) -> io.StringIO:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(redactor))
    logger.addHandler(handler)
    return out


def parse(out: io.StringIO) -> list[dict[str, object]]:
    text = out.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def take(sub: Subscription, count: int) -> list[LogRecordView]:
    got = []
    for _ in range(count):
        got.append(await sub.__anext__())
    return got


def boom(message: str) -> None:
    raise RuntimeError(message)


# --- records and formatter ---------------------------------------------------------------------


def test_level_number() -> None:
    assert level_number("DEBUG") == logging.DEBUG
    assert level_number("Info") == logging.INFO
    assert level_number("warn") == level_number("WARNING") == logging.WARNING
    assert level_number("error") == logging.ERROR
    assert level_number("critical") == logging.CRITICAL
    with pytest.raises(ValueError, match="'verbose'"):
        level_number("verbose")


def test_json_lines_are_valid_json_with_fields(redactor: Redactor, logger: logging.Logger) -> None:
    out = json_lines(redactor, logger)
    logger.info("hello %s", "world", extra=log_fields(user="ann", count=3, ok=True, obj=object()))
    logger.warning("clash", extra=log_fields(msg="field msg", level="x", nan=float("nan")))
    logger.debug("with request id", extra={"request_id": "req-1"})
    token = request_id_var.set("req-ctx")
    try:
        logger.info("in context")
    finally:
        request_id_var.reset(token)
    try:
        boom("kaput")
    except RuntimeError:
        logger.exception("failed")

    first, clash, with_id, in_ctx, failed = parse(out)
    assert list(first)[:4] == ["ts", "level", "logger", "msg"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["ts"]))
    assert first["level"] == "info"
    assert first["logger"] == logger.name
    assert first["msg"] == "hello world"
    assert first["user"] == "ann"
    assert first["count"] == 3
    assert first["ok"] is True
    assert str(first["obj"]).startswith("<object object at")
    assert clash["msg"] == "clash"
    assert clash["level"] == "warning"
    assert clash["field_msg"] == "field msg"
    assert clash["field_level"] == "x"
    assert clash["nan"] == "nan"
    assert with_id["level"] == "debug"
    assert with_id["request_id"] == "req-1"
    assert in_ctx["request_id"] == "req-ctx"
    assert failed["level"] == "error"
    assert "RuntimeError: kaput" in str(failed["exc"])
    assert "Traceback" in str(failed["exc"])


def test_secrets_never_appear_in_json_lines(redactor: Redactor, logger: logging.Logger) -> None:
    out = json_lines(redactor, logger)
    logger.info(f"message {SECRET}")
    logger.info("args %s and %r", SECRET, {"t": TOKEN})
    logger.info(
        "fields",
        extra=log_fields(
            note=f"see {SECRET}",
            nested={"list": [TOKEN, (SECRET,)], SECRET: "as a key"},
            password="not-registered-but-named",
            obj=ValueError(TOKEN),
        ),
    )
    try:
        boom(f"failed with {TOKEN}")
    except RuntimeError:
        logger.exception("error %s", SECRET)

    text = out.getvalue()
    assert SECRET not in text
    assert TOKEN not in text
    assert "not-registered-but-named" not in text
    lines = parse(out)
    assert len(lines) == 4
    assert lines[0]["msg"] == "message ***"
    assert lines[2]["password"] == "***"
    assert "RuntimeError: failed with ***" in str(lines[3]["exc"])


def test_formatter_never_raises(logger: logging.Logger) -> None:
    class BrokenRedactor:
        def scrub(self, text: str) -> str:
            raise RuntimeError(f"cannot scrub {text}")

        def scrub_obj(self, obj: object) -> object:
            raise RuntimeError("cannot scrub")

    logger.handlers.clear()  # pytest's own capture handler would choke on the bad args
    out = json_lines(Redactor([SECRET]), logger)
    logger.info("bad args %d", "not a number")  # the message cannot be %-formatted
    broken = io.StringIO()
    handler = logging.StreamHandler(broken)
    handler.setFormatter(JsonFormatter(BrokenRedactor()))
    logger.handlers[:] = [handler]
    logger.info("secret %s", SECRET)

    [bad_args] = parse(out)
    assert "bad args %d" in str(bad_args["msg"])
    [fallback] = parse(broken)
    assert fallback["msg"] == "unformattable log record"
    assert fallback["level"] == "info"
    assert SECRET not in broken.getvalue()


# --- hub -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hub_records_are_scrubbed(hub: LogHub, logger: logging.Logger) -> None:
    with anyio.fail_after(TIMEOUT):
        async with hub, hub.subscribe() as sub:
            logger.info("key %s", SECRET, extra=log_fields(api_key="whatever", t=[TOKEN]))
            try:
                boom(TOKEN)
            except RuntimeError:
                logger.exception("oops")
            first, second = await take(sub, 2)
    dumped = json.dumps([first.to_json(), second.to_json()])
    assert SECRET not in dumped
    assert TOKEN not in dumped
    assert first.message == "key ***"
    assert first.fields["api_key"] == "***"
    assert first.fields["t"] == ["***"]
    assert "RuntimeError: ***" in second.fields["exc"]
    assert first.seq < second.seq
    assert first.to_json()["seq"] == first.seq


@pytest.mark.anyio
async def test_level_filter(hub: LogHub, logger: logging.Logger) -> None:
    with anyio.fail_after(TIMEOUT):
        async with hub, hub.subscribe(level="WARNING") as sub, hub.subscribe() as default:
            logger.debug("d")
            logger.info("i")
            logger.warning("w")
            logger.error("e")
            logger.critical("c")
            assert [r.message for r in await take(sub, 3)] == ["w", "e", "c"]
            assert [r.level for r in await take(default, 4)] == [
                "info",
                "warning",
                "error",
                "critical",
            ]
            assert sub.pending == 0
            assert default.pending == 0
    with pytest.raises(ValueError, match="'loud'"):
        hub.subscribe(level="loud")


@pytest.mark.anyio
async def test_contains_filter(hub: LogHub, logger: logging.Logger) -> None:
    with anyio.fail_after(TIMEOUT):
        async with hub, hub.subscribe(level="debug", contains="NeEdLe") as sub:
            logger.info("plain")
            logger.info("has a needle in the message")
            logger.info("in fields", extra=log_fields(where="haystack NEEDLE"))
            logger.debug("nothing here")
            logging.getLogger(f"{logger.name}.needle").info("in logger name")
            got = await take(sub, 3)
            assert sub.pending == 0
    assert [r.message for r in got] == [
        "has a needle in the message",
        "in fields",
        "in logger name",
    ]


@pytest.mark.anyio
async def test_subscriber_cap(hub: LogHub) -> None:
    with anyio.fail_after(TIMEOUT):
        async with hub:
            subs = [hub.subscribe() for _ in range(4)]
            assert hub.subscriber_count == 4
            with pytest.raises(TooManySubscribers):
                hub.subscribe()
            await subs[0].aclose()
            assert hub.subscriber_count == 3
            async with hub.subscribe():
                assert hub.subscriber_count == 4
            assert hub.subscriber_count == 3
            for sub in subs[1:]:
                await sub.aclose()
            assert hub.subscriber_count == 0


@pytest.mark.anyio
async def test_slow_consumer_gets_gap_record(hub: LogHub, logger: logging.Logger) -> None:
    with anyio.fail_after(TIMEOUT):
        async with hub, hub.subscribe() as sub:
            for i in range(120):
                logger.info("record %d", i)
            assert sub.pending == 50
            gap, *rest = await take(sub, 51)
            assert gap.level == "warning"
            assert gap.logger == "fangwire.logs"
            assert gap.fields == {"dropped": 70}
            assert gap.message == "70 log records dropped: consumer too slow"
            assert [r.message for r in rest] == [f"record {i}" for i in range(70, 120)]
            assert gap.seq < rest[0].seq
            assert sub.pending == 0

            # From a thread: this task consumes `sub`, so its own records are not streamed.
            await anyio.to_thread.run_sync(logger.info, "after")
            [after] = await take(sub, 1)
            assert after.message == "after"


@pytest.mark.anyio
async def test_flood_from_thread_never_blocks_and_stays_bounded(
    hub: LogHub, logger: logging.Logger
) -> None:
    def flood() -> None:
        for i in range(5_000):
            logger.info("flood %d", i)

    with anyio.fail_after(TIMEOUT):
        async with hub, hub.subscribe() as sub:
            await anyio.to_thread.run_sync(flood)
            assert sub.pending <= 50
            first = await sub.__anext__()
            assert first.fields["dropped"] == 5_000 - 50
            rest = await take(sub, sub.pending)
            assert rest[-1].message == "flood 4999"


@pytest.mark.anyio
async def test_records_from_worker_threads_arrive(hub: LogHub, logger: logging.Logger) -> None:
    with anyio.fail_after(TIMEOUT):
        async with hub, hub.subscribe() as sub:
            await anyio.to_thread.run_sync(logger.info, "from anyio worker")
            [first] = await take(sub, 1)
            assert first.message == "from anyio worker"

            # A plain thread: the consumer waits first, then the thread emits.
            thread = threading.Thread(target=lambda: (time.sleep(0.05), logger.info("raw")))
            thread.start()
            [second] = await take(sub, 1)
            assert second.message == "raw"
            await anyio.to_thread.run_sync(thread.join)
            assert first.seq < second.seq


@pytest.mark.anyio
async def test_not_started_or_stopped_hub_only_fills_backlog(
    redactor: Redactor, logger: logging.Logger
) -> None:
    hub = LogHub(redactor, backlog=5)
    logger.addHandler(hub.handler)
    with anyio.fail_after(TIMEOUT):
        sub = hub.subscribe()
        logger.info("before start")
        assert sub.pending == 0
        async with hub:
            logger.info("running")
            assert [r.message for r in await take(sub, 1)] == ["running"]
            assert not sub.closed
        assert sub.closed
        logger.info("after stop")
    assert [r.message for r in hub.recent(10)] == ["before start", "running", "after stop"]


def test_backlog_recent_and_since(hub: LogHub, logger: logging.Logger) -> None:
    for i in range(30):
        logger.log(logging.WARNING if i % 2 else logging.INFO, "n%d", i, extra=log_fields(i=i))
    recent = hub.recent(100, level="debug")
    assert [r.message for r in recent] == [f"n{i}" for i in range(10, 30)]  # ring of 20
    assert [r.message for r in hub.recent(3)] == ["n27", "n28", "n29"]
    assert [r.message for r in hub.recent(2, level="warning")] == ["n27", "n29"]
    assert [r.message for r in hub.recent(5, contains="N1")] == [f"n{i}" for i in range(15, 20)]
    assert hub.recent(0) == []

    seqs = [r.seq for r in recent]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert [r.message for r in hub.since(seqs[-3])] == ["n28", "n29"]
    assert [r.message for r in hub.since(seqs[-5], level="warning")] == ["n27", "n29"]
    assert hub.since(seqs[-1]) == []
    assert len(hub.since(0)) == 20  # older records have left the ring


@pytest.mark.anyio
async def test_subscribe_with_replay(hub: LogHub, logger: logging.Logger) -> None:
    for i in range(5):
        logger.info("old %d", i)
    old = hub.recent(5)
    with anyio.fail_after(TIMEOUT):
        async with hub:
            async with hub.subscribe(since=old[2].seq) as sub:
                logger.info("live")
                assert [r.message for r in await take(sub, 3)] == ["old 3", "old 4", "live"]
            async with hub.subscribe(recent=2, contains="old") as sub:
                assert [r.message for r in await take(sub, 2)] == ["old 3", "old 4"]
                assert sub.pending == 0
    with pytest.raises(ValueError, match="either"):
        hub.subscribe(since=1, recent=1)


@pytest.mark.anyio
async def test_stop_ends_iterators(hub: LogHub, logger: logging.Logger) -> None:
    received: list[str] = []
    got_one = anyio.Event()
    finished = anyio.Event()

    async def consume(sub: Subscription) -> None:
        async for record in sub:
            received.append(record.message)
            got_one.set()
        finished.set()

    with anyio.fail_after(TIMEOUT):
        await hub.start()
        sub = hub.subscribe()
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, sub)
            logger.info("one")
            await got_one.wait()
            await hub.stop()
            await finished.wait()
        assert received == ["one"]
        assert sub.closed
        assert hub.subscriber_count == 0
        assert not hub.running
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
        await hub.stop()  # idempotent


@pytest.mark.anyio
async def test_consumer_that_logs_does_not_feed_on_itself(
    hub: LogHub, logger: logging.Logger
) -> None:
    processed: list[str] = []
    got_three = anyio.Event()

    async def consume(sub: Subscription) -> None:
        async for record in sub:
            processed.append(record.message)
            logger.warning("processing %s", record.message)  # would loop without the guard
            if len(processed) == 3:
                got_three.set()

    with anyio.fail_after(TIMEOUT):
        async with hub, hub.subscribe() as watcher, anyio.create_task_group() as tg:
            sub = hub.subscribe()
            tg.start_soon(consume, sub)
            for i in range(3):
                logger.info("event %d", i)
            await got_three.wait()
            await anyio.sleep(0.05)  # give a feedback loop time to show up
            assert processed == ["event 0", "event 1", "event 2"]
            # Neither the other subscriber nor the backlog saw the consumer's own records.
            assert [r.message for r in await take(watcher, 3)] == processed
            assert watcher.pending == 0
            assert [r.message for r in hub.recent(10)] == processed
            await sub.aclose()
        # Once the consumer has closed its subscription, its task logs normally again.
        logger.info("after")
        assert hub.recent(1)[0].message == "after"


@pytest.mark.anyio
async def test_logging_during_delivery_does_not_recurse(logger: logging.Logger) -> None:
    class ChattyRedactor(Redactor):
        def scrub(self, text: str) -> str:
            logger.info("scrubbing")  # logs from inside the hub's delivery
            return super().scrub(text)

    hub = LogHub(ChattyRedactor([SECRET]))
    logger.addHandler(hub.handler)
    own = logging.getLogger("fangwire.logs")
    own.addHandler(hub.handler)
    try:
        with anyio.fail_after(TIMEOUT):
            async with hub, hub.subscribe() as sub:
                logger.info("hello %s", SECRET)
                own.warning("the hub's own logger is never streamed")
                [record] = await take(sub, 1)
                assert record.message == "hello ***"
                assert sub.pending == 0
    finally:
        own.removeHandler(hub.handler)
    assert [r.message for r in hub.recent(10)] == ["hello ***"]


# --- configure_logging ---------------------------------------------------------------------

MANAGED = ("fangwire", "uvicorn", "uvicorn.error", "uvicorn.access")


def logger_state() -> list[tuple[list[logging.Handler], int, bool, bool]]:
    return [
        (list(log.handlers), log.level, log.propagate, log.disabled)
        for log in map(logging.getLogger, MANAGED)
    ]


def test_configure_logging_and_uninstall(redactor: Redactor) -> None:
    marker = logging.NullHandler()
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(marker)
    uvicorn.setLevel(logging.ERROR)
    try:
        before = logger_state()
        out = io.StringIO()
        hub = LogHub(redactor)
        uninstall = configure_logging("debug", redactor, stream=out, hub=hub)
        try:
            logging.getLogger("fangwire.sub").debug("from fangwire %s", SECRET)
            logging.getLogger("uvicorn.error").info("from uvicorn.error")
            logging.getLogger("uvicorn.access").info("GET / 200")
            logging.getLogger("uvicorn").warning("from uvicorn")
            during = logger_state()
        finally:
            uninstall()
        after = logger_state()
        uninstall()  # idempotent
        logging.getLogger("fangwire.sub").error("after uninstall")
    finally:
        uvicorn.removeHandler(marker)
        uvicorn.setLevel(logging.NOTSET)

    assert after == before
    assert all(not propagate for _, _, propagate, _ in during)
    assert all(level == logging.DEBUG for _, level, _, _ in during)
    lines = parse(out)  # each record exactly once, nothing after uninstall
    assert [(line["logger"], line["msg"]) for line in lines] == [
        ("fangwire.sub", "from fangwire ***"),
        ("uvicorn.error", "from uvicorn.error"),
        ("uvicorn.access", "GET / 200"),
        ("uvicorn", "from uvicorn"),
    ]
    assert SECRET not in out.getvalue()
    assert [r.message for r in hub.recent(10, level="debug")] == [line["msg"] for line in lines]


def test_configure_logging_rejects_bad_level_without_changes(redactor: Redactor) -> None:
    before = logger_state()
    with pytest.raises(ValueError, match="'chatty'"):
        configure_logging("chatty", redactor, stream=io.StringIO())
    assert logger_state() == before


def test_log_fields() -> None:
    assert log_fields(a=1, b="x") == {"fields": {"a": 1, "b": "x"}}
