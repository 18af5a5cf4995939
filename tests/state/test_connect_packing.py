"""state/connect.py's HiredisPackingConnection: the C packer sends what redis-py's own would."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from state.connect import HiredisPackingConnection, connect

_ARGS = st.lists(
    st.one_of(
        st.text(),
        st.binary(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.binary().map(bytearray),
        st.binary().map(lambda b: memoryview(b)),
    ),
    min_size=1,
    max_size=8,
)


_NAMES = st.sampled_from(["SET", "EVALSHA", "CLIENT SETINFO", b"HSET", "ÉCHO", "GET\t", " SREM"])


@given(name=_NAMES, args=_ARGS)
def test_packs_every_command_to_the_same_bytes_as_redis_py(
    name: str | bytes, args: list[str | bytes | int | float | bytearray | memoryview]
) -> None:
    """Any command name (a two-word one too) and any str/bytes/int/float arguments (and
    the buffers hiredis refuses, which take the fallback): byte for byte what redis-py's
    pure-Python packer produces."""
    ours = b"".join(HiredisPackingConnection().pack_command(name, *args))
    theirs = b"".join(Connection().pack_command(name, *args))
    assert ours == theirs


@given(commands=st.lists(st.tuples(_NAMES, _ARGS), min_size=1, max_size=5))
def test_packs_a_batch_to_the_same_bytes_as_redis_py(
    commands: list[tuple[str | bytes, list[str | bytes | int | float | bytearray | memoryview]]],
) -> None:
    """A batch (the pipeline a batcher sends) is the same bytes, in the same order, as
    redis-py's `pack_commands` writes, however redis-py cuts them into buffers."""
    batch = [(name, *args) for name, args in commands]
    ours = b"".join(HiredisPackingConnection().pack_commands(batch))
    theirs = b"".join(Connection().pack_commands(batch))
    assert ours == theirs


@pytest.mark.parametrize("bad", [True, None, object()])
def test_an_argument_redis_has_no_form_for_is_a_data_error_as_before(bad: object) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", bad)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        HiredisPackingConnection().pack_command("SET", "k", bad)  # type: ignore[arg-type]


@pytest.mark.redis
async def test_a_plain_redis_url_packs_with_hiredis_and_round_trips(
    redis_url: str, redis_prefix: str
) -> None:
    client = connect(redis_url)
    try:
        assert isinstance(client, aioredis.Redis)
        assert client.connection_pool.connection_class is HiredisPackingConnection
        key = f"{redis_prefix}packed"
        await client.set(key, "é\r\n$3\r\n", ex=60)
        assert await client.get(key) == "é\r\n$3\r\n".encode()
        await client.delete(key)
    finally:
        await client.aclose()
