"""`Batcher`: the commands issued in one event-loop turn go to Redis as one pipeline.

Shared by the Redis store and its leases, so a burst of submits (a claim and a
save each) costs a few round trips on a few pooled connections, not one
connection per command. `Batcher.eval` runs a Lua script by its SHA and loads
it when Redis lost its script cache (a restart, SCRIPT FLUSH).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import inspect
from collections.abc import Awaitable, Coroutine, Hashable, Sequence
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from state.redis_routes import BatchRoutes, Pending, settled
from state.redis_wire import OwnConnection, set_once

# A queued command, the future its caller awaits, and the script to load when Redis
# answers NOSCRIPT (None: no reload, the error is the reply).
_Queued = tuple[tuple[Any, ...], asyncio.Future[Any], "LuaScript | None"]

# The callers that joined a queued command (`Batcher.eval_joined`): each one's future and
# the reply it gets when the command succeeds.
_Joiners = Sequence[tuple[asyncio.Future[Any], Any]]

class LuaScript:
    """A script's source and SHA1, computed once."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class Batcher:
    """Sends the commands issued in one turn of the event loop to Redis together.

    The first command of a turn opens a batch, sent once the turn's other callbacks
    have run, so commands issued meanwhile join it. A batch goes to Redis in one write
    on one connection (one round trip instead of one per command): the batcher's own
    connection when it is free, else one of the pool's (on a Cluster, redis-py's
    pipeline, which routes each command to its node: `BatchRoutes`, state/redis_routes.py,
    picks the route); its replies are read under one bound, the command timeout. On its
    own open connection (`OwnConnection`, when it
    speaks as the pool's would) a batch needs no task: a callback writes it and the
    replies answer the callers from the socket's callback, so a caller wakes one loop
    turn after its replies arrive, not two. Otherwise a task sends it (connecting,
    retrying, or through the pool) and answers the callers. Every caller awaits its own
    command's future, so a cancelled caller never fails anyone else's command (its
    own may still run, as it could have before). Errors stay per command: a
    `ResponseError` fails only its command (a script's NOSCRIPT makes the batcher load
    it and send the command again); a connection error or a timeout fails every
    command of the batch.
    """

    def __init__(self, client: aioredis.Redis | aioredis.RedisCluster) -> None:
        self._client = client
        self._cluster = isinstance(client, aioredis.RedisCluster)
        self._open: list[_Queued] | None = None
        # The open batch's joinable commands by join key: their place in it, and who joined.
        self._joinable: dict[Hashable, tuple[int, list[tuple[asyncio.Future[Any], Any]]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sending: set[asyncio.Task[None]] = set()
        # Where its batches go (kept connections, the pool's, a Cluster's pipeline).
        self._routes = BatchRoutes(client)
        # Batches on a wire with no task waiting for them (their replies answer the
        # callers from the socket's callback), and who waits for them in `drain`.
        self._on_wire = 0
        self._drained: asyncio.Future[None] | None = None
        # Commands handed to Redis so far, and the round trips that took them (tests
        # and bench/ count them).
        self.commands_sent = 0
        self.round_trips = 0

    @property
    def own_round_trips(self) -> int:
        """How many of `round_trips` went over a connection the batcher keeps."""
        return self._routes.own_round_trips

    def call(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue `command` (e.g. `("EXISTS", key)`); the future gets its reply."""
        return self._queue(command, None)

    def _queue(self, command: tuple[Any, ...], script: LuaScript | None) -> asyncio.Future[Any]:
        # The loop of the last command, kept while it runs: `asyncio.get_running_loop`
        # makes a system call (getpid) each time, and every workflow queues four or more
        # commands. A loop that is not running is not this command's (one loop runs per
        # thread): the running one is looked up then.
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._open is None:
            self._open = []
            if self._routes.wire_ready(loop):
                # Written by a callback at the end of this turn (no task): see `_flush`.
                loop.call_soon(self._flush)
            else:
                self._start_send(loop)
        self._open.append((command, future, script))
        return future

    def _start_send(self, loop: asyncio.AbstractEventLoop) -> None:
        self._spawn(loop, self._send())

    def _spawn(self, loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None]) -> None:
        """`work` in a task held until it ends, and waited for by `drain`."""
        task = loop.create_task(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _flush(self) -> None:
        """Write the open batch on a free connection of the batcher's own now, in this
        callback; its replies answer the callers where they are read (`OwnConnection`).
        When none is free and open any more, a task sends it instead."""
        loop = self._loop
        assert loop is not None
        wire = self._routes.take_wire(loop)
        if wire is None:
            self._start_send(loop)
            return
        batch, joined = self._take()
        commands = [command for command, _, _ in batch]
        answered = partial(self._wire_answered, wire, batch, joined, commands)
        try:
            wire.send(commands, answered)
        except Exception as exc:  # an argument Redis has no form for: nothing was sent
            self._routes.give_back(wire)
            _fail_batch(batch, joined, exc)
            return
        self._on_wire += 1
        self._routes.own_round_trips += 1

    def _wire_answered(
        self,
        wire: OwnConnection,
        batch: list[_Queued],
        joined: dict[asyncio.Future[Any], _Joiners],
        commands: list[tuple[Any, ...]],
        replies: list[Any] | Exception,
    ) -> None:
        if isinstance(replies, Exception):
            # Lost or timed out: redis-py's retry policy decides what follows (a task:
            # rare, and it may back off and reconnect).
            assert self._loop is not None
            self._spawn(self._loop, self._wire_retried(wire, batch, joined, commands, replies))
            return
        self._on_wire -= 1
        self._routes.give_back(wire)
        parsed = self._routes.parsed(commands, replies)
        if isinstance(parsed, Pending):  # a response callback to await (none of ours)
            assert self._loop is not None
            self._spawn(self._loop, self._answer_later(batch, joined, parsed))
        else:
            self._answer(batch, joined, parsed)
        self._wake_drain()

    async def _wire_retried(
        self,
        wire: OwnConnection,
        batch: list[_Queued],
        joined: dict[asyncio.Future[Any], _Joiners],
        commands: list[tuple[Any, ...]],
        error: Exception,
    ) -> None:
        try:
            replies = await wire.exchange(commands, failed=error)
        except BaseException as exc:
            _fail_batch(batch, joined, exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._on_wire -= 1
            self._routes.give_back(wire)
            self._wake_drain()
        await self._answer_later(batch, joined, self._routes.parsed(commands, replies))

    def eval(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> asyncio.Future[Any]:
        """EVALSHA `script`; on NOSCRIPT (Redis restarted, cache flushed) load it and go again.

        The command is queued at once, not when the result is awaited: scripts and
        commands issued one after another in one turn go to Redis in that order, in
        one round trip (an accept's lease, document and index writes). A plain future,
        reloads done by the batcher: `gather` over replies wraps none of them in a task.
        """
        return self._queue(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    def eval_joined(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Any],
        items: Sequence[Any],
        *,
        join: Hashable,
        joined_reply: Any = None,
        at_end: bool = False,
    ) -> asyncio.Future[Any]:
        """`eval(script, keys, (*args, *items))`, or, when a command queued under the same
        `join` key is still in this turn's open batch, `items` appended to its arguments:
        one command for the batch instead of one per caller (an accept's lease listing and
        history entry: ~4 µs of client CPU a command, and Redis runs one script).

        `script` must take any number of items at the end of its ARGV, and the first
        caller's `args` stand for all (so `join` must name what they mean: the keys, and
        anything in `args` a joiner may not share). The first caller's future gets the
        script's reply; a joiner's gets `joined_reply`, or the command's error. The command
        stays where the first caller queued it, or, when a joiner passes `at_end`, moves to
        where that joiner's own would have gone (after every command queued before it).
        """
        joinable = self._joinable.get(join) if self._open is not None else None
        if joinable is None:
            queued = self._queue(("EVALSHA", script.sha, len(keys), *keys, *args, *items), script)
            assert self._open is not None
            self._joinable[join] = (len(self._open) - 1, [])
            return queued
        at, joiners = joinable
        batch = self._open
        assert batch is not None
        command, first, _ = batch[at]
        entry: _Queued = ((*command, *items), first, script)
        if at_end and at != len(batch) - 1:
            del batch[at]
            # The commands after it move up one place: so do the joinable ones among them.
            for key, (index, others) in self._joinable.items():
                if index > at:
                    self._joinable[key] = (index - 1, others)
            batch.append(entry)
            at = len(batch) - 1
        else:
            batch[at] = entry
        loop = self._loop
        assert loop is not None  # (set by the first caller's `_queue`, in this turn)
        future: asyncio.Future[Any] = loop.create_future()
        joiners.append((future, joined_reply))
        self._joinable[join] = (at, joiners)
        return future

    def _reload_then_answer(
        self,
        script: LuaScript,
        command: tuple[Any, ...],
        future: asyncio.Future[Any],
        joiners: _Joiners,
    ) -> None:
        """Load `script`, send `command` again (once: a second NOSCRIPT is its answer) and
        settle `future` with that reply; a task of its own (rare: Redis lost its scripts),
        drained like a batch."""

        async def reload() -> None:
            try:
                if self._cluster:
                    # SCRIPT LOAD names no key: redis-py sends it to every primary itself.
                    await self._client.script_load(script.source)
                else:
                    # Batched like any command: a burst that all missed loads it in one trip.
                    await self.call(("SCRIPT", "LOAD", script.source))
                reply = await self.call(command)
            except Exception as exc:
                _settle(future, joiners, None, exc)
                return
            except BaseException:
                future.cancel()
                for joiner, _ in joiners:
                    joiner.cancel()
                raise
            _settle(future, joiners, reply, None)

        self._spawn(asyncio.get_running_loop(), reload())

    async def drain(self) -> None:
        """Wait until every batch queued so far has been answered."""
        while True:
            if self._sending:
                await asyncio.wait(list(self._sending))
            elif self._open is not None or self._on_wire:
                # (a batch about to be flushed, or on the wire with no task of its own;
                # one future for every drain waiting)
                if self._drained is None:
                    self._drained = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._drained)
            else:
                return

    def _wake_drain(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None:
            set_once(drained, None)

    async def release(self) -> None:
        """Drain, then close the batcher's own connections and give their places back to
        the pool (`BatchRoutes.release`)."""
        await self.drain()
        await self._routes.release()

    def _take(self) -> tuple[list[_Queued], dict[asyncio.Future[Any], _Joiners]]:
        """The open batch, now closed, and the other callers of its joined commands by
        their first caller's future."""
        batch, self._open = self._open or [], None
        joined: dict[asyncio.Future[Any], _Joiners] = {
            batch[at][1]: joiners for at, joiners in self._joinable.values() if joiners
        }
        self._joinable = {}
        self.commands_sent += len(batch)
        self.round_trips += 1
        self._wake_drain()
        return batch, joined

    async def _send(self) -> None:
        batch, joined = self._take()
        try:
            replies = await self._routes.round_trip([command for command, _, _ in batch])
        except BaseException as exc:
            _fail_batch(batch, joined, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._answer(batch, joined, replies)

    async def _answer_later(
        self,
        batch: list[_Queued],
        joined: dict[asyncio.Future[Any], _Joiners],
        replies: list[Any | Awaitable[Any]],
    ) -> None:
        self._answer(batch, joined, await settled(replies))

    def _answer(
        self,
        batch: list[_Queued],
        joined: dict[asyncio.Future[Any], _Joiners],
        replies: list[Any],
    ) -> None:
        """Each caller its reply or its command's error (a NOSCRIPT: load and go again)."""
        for (command, future, script), reply in zip(batch, replies, strict=True):
            joiners = joined.get(future, ()) if joined else ()
            if future.done() and not joiners:
                continue  # its caller was cancelled
            if script is not None and isinstance(reply, NoScriptError):
                self._reload_then_answer(script, command, future, joiners)
            elif isinstance(reply, Exception):
                _settle(future, joiners, None, reply)
            else:
                _settle(future, joiners, reply, None)

async def in_order(*waits: Awaitable[Any]) -> list[Any]:
    """The replies of `waits`, awaited one after another.

    Their commands are queued already (a turn's commands go to Redis together), so this
    costs no round trip more than `asyncio.gather` would; unlike gather it wraps no
    coroutine in a task and takes no loop turn per reply: a reply already there is read
    without yielding. Every one is awaited even after one failed (none is left with an
    unread error), then the first error is raised. When the caller is cancelled, those
    not awaited yet are cancelled (or closed), as gather cancels its children.
    """
    results: list[Any] = []
    error: Exception | None = None
    done = 0
    try:
        for wait in waits:
            try:
                results.append(await wait)
            except Exception as exc:
                error = error or exc
                results.append(None)
            done += 1
    except BaseException:
        for rest in waits[done + 1 :]:
            if isinstance(rest, asyncio.Future):
                rest.cancel()
            elif inspect.iscoroutine(rest):
                rest.close()
        raise
    if error is not None:
        raise error
    return results


def _fail_batch(
    batch: list[_Queued], joined: dict[asyncio.Future[Any], _Joiners], exc: BaseException
) -> None:
    """`_fail` for every command of a batch that got no replies (and their joiners)."""
    for _, future, _ in batch:
        _fail(future, joined.get(future, ()), exc)


def _fail(first: asyncio.Future[Any], joiners: _Joiners, exc: BaseException) -> None:
    """A batch that got no replies: its error for every caller of one of its commands (a
    copy each), or their cancel when the sender itself was cancelled (the loop closing)."""
    for waiting in (first, *(joiner for joiner, _ in joiners)):
        if waiting.done():
            continue
        if isinstance(exc, Exception):
            waiting.set_exception(own_copy(exc))
        else:
            waiting.cancel()


def _settle(
    first: asyncio.Future[Any], joiners: _Joiners, reply: Any, error: Exception | None
) -> None:
    """Answer a joined command's first caller with `reply` and each joiner with its own
    reply, or all of them with `error` (a copy each)."""
    if error is not None:
        if not first.done():
            first.set_exception(error)
        for joiner, _ in joiners:
            if not joiner.done():
                joiner.set_exception(own_copy(error))
        return
    if not first.done():
        first.set_result(reply)
    for joiner, joined_reply in joiners:
        if not joiner.done():
            joiner.set_result(joined_reply)


def own_copy(exc: BaseException) -> BaseException:
    """A copy of `exc` per waiting caller, so each raise keeps its own traceback."""
    try:
        mine = copy.copy(exc)
    except Exception:
        return exc
    mine.__cause__ = exc.__cause__
    mine.__context__ = exc.__context__
    return mine
