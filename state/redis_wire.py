"""`OwnConnection`: the batcher's own connection to a single Redis, replies read where they land.

A redis-py connection reads replies in a coroutine, so a batch sent on one needs a task
to wait for them: the socket wakes that task, and the task then wakes each caller, a loop
turn later. Here the batch is written in the callback that flushes it (no task), the
replies are parsed by hiredis in the protocol's `data_received`, and each caller's future
is settled there: the caller wakes in the next turn, as an aiohttp client does on its
answer. Errors are redis-py's: a refusal is the exception redis-py's parser makes of it
(`reply_error`: NOSCRIPT is a `NoScriptError`), a lost connection a
`ConnectionError`, no replies within the command timeout a `TimeoutError`.

It is used only where it speaks exactly what redis-py's connection would (`fits`: plain
TCP, RESP2 or RESP3, bytes replies, a username and password or none); elsewhere batches
go on redis-py's connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ExecAbortError,
    InvalidResponse,
    MasterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state.connect import HiredisPackingConnection

# The exception redis-py's parser makes of an error reply, by its first word (redis-py's
# `BaseParser.EXCEPTION_CLASSES`, which it does not export, for what a single Redis
# answers); any other is a plain `ResponseError` carrying the whole message.
_ERRORS: dict[str, type[ResponseError] | type[RedisConnectionError]] = {
    "OOM": OutOfMemoryError,
    "WRONGPASS": AuthenticationError,
    "EXECABORT": ExecAbortError,
    "LOADING": BusyLoadingError,
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "NOAUTH": AuthenticationError,
    "NOPERM": NoPermissionError,
    "MASTERDOWN": MasterDownError,
}
_ERR_ERRORS: dict[str, type[ResponseError] | type[RedisConnectionError]] = {
    "max number of clients reached": RedisConnectionError,
    "invalid password": AuthenticationError,
}


def reply_error(message: str) -> Exception:
    """The exception redis-py makes of the error reply `message` (a `ConnectionError` for
    those that mean the connection cannot serve, as LOADING)."""
    code, _, rest = message.partition(" ")
    if code == "ERR":  # (its text without the code, as for every code redis-py knows)
        return _ERR_ERRORS.get(rest, ResponseError)(rest, status_code=code)
    kind = _ERRORS.get(code)
    if kind is None:
        return ResponseError(message)
    return kind(rest, status_code=code)


# A RESP3 push's type (hiredis 3.2 on; before, pushes came as lists, and none is asked
# for on this connection).
_PUSH: type | None = getattr(hiredis, "PushNotification", None)

# The protocol versions it speaks (redis-py 8 defaults to 3).
_PROTOCOLS = ("2", "3")

# What a sent batch is told when its replies are all in (a list, a `ResponseError` in the
# place of a refused command) or when it cannot get them (the error).
Answer = Callable[[list[Any] | Exception], None]


class OwnConnection:
    """One TCP connection to Redis, one batch on it at a time (`send`), its replies
    handed to the batch's `Answer` from the socket's callback."""

    def __init__(self, template: AbstractConnection) -> None:
        # A pooled connection of the same client, whose settings it copies.
        self._template = template
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None  # (a closed one's late callbacks are ignored)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: Any = None
        # The batch on the wire: how many replies it waits for, those read, its answer.
        self._expected = 0
        self._replies: list[Any] = []
        self._answer: Answer | None = None
        self._timer: asyncio.TimerHandle | None = None

    @staticmethod
    def fits(template: AbstractConnection) -> bool:
        """Whether this connection speaks exactly as `template` (a pooled redis-py
        connection) would: the plain TCP class `connect` picks, RESP2 or 3, bytes replies,
        no credential provider (a username and password are sent as redis-py sends them)."""
        conn: Any = template  # redis-py's connection attributes are untyped
        encoder = getattr(conn, "encoder", None)
        maintenance = getattr(conn, "maint_notifications_config", None)
        return (
            type(conn) is HiredisPackingConnection
            and str(conn.protocol or 2) in _PROTOCOLS
            and conn.credential_provider is None
            and encoder is not None
            and not encoder.decode_responses
            # "auto" (the default) asks a server that has none for them and goes on
            # without; True requires them.
            and getattr(maintenance, "enabled", False) is not True
        )

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop its socket belongs to (a batcher used under another loop reconnects)."""
        return self._loop

    async def connect(self) -> None:
        """Open the socket (within the connect timeout) and greet Redis as redis-py's
        `on_connect` does for these settings (HELLO or AUTH, CLIENT SETNAME, SELECT)."""
        conn: Any = self._template  # redis-py's connection attributes are untyped
        self.close()
        loop = self._loop = asyncio.get_running_loop()
        host_error = f"{conn.host}:{conn.port}"
        protocol = self._protocol = _Protocol(self)
        try:
            async with asyncio.timeout(conn.socket_connect_timeout):
                transport, _ = await loop.create_connection(lambda: protocol, conn.host, conn.port)
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout connecting to {host_error}") from None
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to {host_error}. {exc}") from exc
        self._transport = transport
        # (redis-py's hiredis parser makes its reader so, for replies of the same types)
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=reply_error)
        hello, optional = _greeting(conn)
        if not hello:
            return
        replies = await self._sent(hello)
        for i, reply in enumerate(replies):
            if isinstance(reply, Exception) and not optional & (1 << i):
                self.close()
                raise reply

    @property
    def template(self) -> AbstractConnection:
        """The pooled connection whose settings it copies (and whose place it holds)."""
        return self._template

    def send(self, commands: list[tuple[Any, ...]], answer: Answer) -> None:
        """Write `commands` (packed first: an argument Redis has no form for raises
        redis-py's DataError here, before anything is sent); `answer` gets their replies,
        or the error that ended the connection first. One batch at a time."""
        conn: Any = self._template  # (its packer: HiredisPackingConnection's)
        self._send(conn.pack_commands(commands), len(commands), answer)

    async def exchange(
        self, commands: list[tuple[Any, ...]], *, failed: Exception | None = None
    ) -> list[Any]:
        """`commands`' replies, under redis-py's retry policy of the client (a lost
        connection or a timeout: reconnect and send again, as often as it allows);
        connecting first when it is not. `failed`: the error of an attempt already made
        (`send`'s), counted by the policy as any other."""

        async def attempt() -> list[Any]:
            nonlocal failed
            error, failed = failed, None
            if error is not None:
                raise error
            return await self._attempt(commands)

        async def reconnect(_: Exception) -> None:
            self.close()  # what redis-py does before a retry: a fresh connection

        conn: Any = self._template  # (redis-py's attributes are untyped)
        retry: Retry = conn.retry
        replies: list[Any] = await retry.call_with_retry(attempt, reconnect)
        return replies

    async def _attempt(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        if not self.connected or self._loop is not loop:
            await self.connect()
        return await self._sent(commands)

    async def _sent(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """`send` `commands` and await their replies (their error raised)."""
        assert self._loop is not None  # (set when it connected)
        answered: asyncio.Future[list[Any] | Exception] = self._loop.create_future()
        self.send(commands, partial(set_once, answered))
        try:
            replies = await answered
        except BaseException:
            self.abandon()  # (its replies may still come: never reuse the stream)
            raise
        if isinstance(replies, Exception):
            raise replies
        return replies

    def _send(self, packed: list[bytes], count: int, answer: Answer) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            answer(RedisConnectionError("Connection closed by server."))
            return
        self._expected, self._replies, self._answer = count, [], answer
        timeout_s = self._template.socket_timeout
        if timeout_s:
            assert self._loop is not None  # (set when it connected)
            self._timer = self._loop.call_later(timeout_s, self._timed_out, count)
        # The transport buffers what the socket does not take at once (its bound is the
        # command timeout, as for a redis-py write).
        transport.writelines(packed)

    def received(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return  # (a connection closed already)
        reader = self._reader
        reader.feed(data)
        replies = self._replies
        while (reply := reader.gets()) is not False:
            if isinstance(reply, RedisConnectionError):  # (LOADING, max clients: as redis-py)
                self._end(reply)
                return
            if _PUSH is not None and isinstance(reply, _PUSH):
                continue  # (RESP3 pushes, none asked for: skipped, as redis-py does)
            replies.append(reply)
        if self._answer is None:
            if replies:  # replies nobody asked for: never trust the stream again
                self._end(RedisConnectionError("Unexpected reply from Redis"))
            return
        if len(replies) >= self._expected:
            answer, self._answer = self._answer, None
            self._replies = []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            answer(replies)

    def lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return  # (a connection closed already)
        self._transport = self._protocol = None
        if self._answer is None:
            # Closed while idle (Redis restarted, or dropped it as idle): the next batch
            # opens a new one first, nothing of it sent on this one, so no attempt is lost
            # (a pooled redis-py connection learns of it only when a command fails on it).
            return
        reason = "Connection closed by server." if exc is None else f"Error while reading: {exc}"
        self._end(RedisConnectionError(reason))

    def _timed_out(self, count: int) -> None:
        self._timer = None
        self._end(
            RedisTimeoutError(
                f"Timeout sending {count} command(s) to Redis or reading their replies"
            )
        )

    def _end(self, error: Exception) -> None:
        """The connection cannot be trusted any more (replies may still come): close it and
        fail the batch on it."""
        answer, self._answer = self._answer, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.close()
        if answer is not None:
            answer(error)

    def abandon(self) -> None:
        """Forget the batch on the wire without answering it (its waiter is gone) and close."""
        self._answer = None
        self._end(RedisConnectionError("abandoned"))

    def close(self) -> None:
        self._protocol = None
        transport, self._transport = self._transport, None
        if transport is not None and not (self._loop is not None and self._loop.is_closed()):
            transport.close()  # (a closed loop's transport cannot be closed, nor used)


def set_once(future: asyncio.Future[Any], result: Any) -> None:
    """`future`'s result, unless its waiter is gone (cancelled)."""
    if not future.done():
        future.set_result(result)


def _greeting(conn: Any) -> tuple[list[tuple[Any, ...]], int]:
    """The commands redis-py's `on_connect` sends for `conn`'s settings, in its order (its
    HELLO carries the credentials on RESP3), and a bit set of those whose refusal is not
    an error: the library name and version (an old server refuses them)."""
    hello: list[tuple[Any, ...]] = []
    optional = 0
    auth: tuple[Any, ...] = ()
    if conn.password:  # (redis-py's credentials: the password alone without a username)
        auth = (conn.username, conn.password) if conn.username else (conn.password,)
    if str(conn.protocol) == "3":
        user_and_password = ("default", *auth) if len(auth) == 1 else auth
        hello.append(("HELLO", 3, *(("AUTH", *user_and_password) if auth else ())))
    elif auth:
        hello.append(("AUTH", *auth))
    if conn.client_name:
        hello.append(("CLIENT", "SETNAME", conn.client_name))
    info = conn.driver_info
    for field, value in (
        ("LIB-NAME", info and info.formatted_name),
        ("LIB-VER", info and info.lib_version),
    ):
        if value:
            hello.append(("CLIENT", "SETINFO", field, value))
            optional |= 1 << (len(hello) - 1)
    if conn.db:
        hello.append(("SELECT", conn.db))
    return hello, optional


class _Protocol(asyncio.Protocol):
    def __init__(self, conn: OwnConnection) -> None:
        self._conn = conn

    def data_received(self, data: bytes) -> None:
        self._conn.received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.lost(self, exc)


