"""`milliseconds` is `round(seconds * 1000.0, 3)`, float for float, the sign of a zero
included: every `duration_ms` the documents, events and answers show is one."""

from __future__ import annotations

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from state.models import NodeRun, milliseconds


def _same(a: float, b: float) -> bool:
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


# Durations as the clock gives them (fractions of a second to days, either sign: a
# clock stepped back), then any finite float (huge, tiny, subnormal).
_DURATIONS = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
_ANY = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=3000)
@given(seconds=_DURATIONS | _ANY)
@example(seconds=0.0)
@example(seconds=-0.0)
@example(seconds=-1e-10)  # rounds to -0.0
@example(seconds=1e-10)
@example(seconds=0.0000005)  # half a microsecond: a tie
@example(seconds=0.0000015)
@example(seconds=0.0000025)
@example(seconds=-0.0000025)
@example(seconds=1.0005e-3)
@example(seconds=2147.4836475)  # 2**31 microseconds and a half: past the fast range
@example(seconds=2147.483647)
@example(seconds=1e300)
@example(seconds=5e-324)
def test_milliseconds_is_round_to_three_places(seconds: float) -> None:
    assert _same(milliseconds(seconds), round(seconds * 1000.0, 3))


@settings(max_examples=2000)
@given(whole=st.integers(min_value=-(2**31), max_value=2**31), shift=st.integers(-3, 3))
def test_milliseconds_near_a_half_microsecond(whole: int, shift: int) -> None:
    """Halves of a microsecond, and the floats right beside them: where the product's
    own rounding could cross the half."""
    seconds = (whole + 0.5) / 1e6
    for _ in range(abs(shift)):
        seconds = math.nextafter(seconds, math.inf if shift > 0 else -math.inf)
    assert _same(milliseconds(seconds), round(seconds * 1000.0, 3))


def test_a_step_duration_is_its_rounded_milliseconds() -> None:
    run = NodeRun("a", "agent", started_at=1764591234.5678912, finished_at=1764591234.6012345)
    assert run.duration_ms == round((run.finished_at - run.started_at) * 1000.0, 3)  # type: ignore[operator]
    assert NodeRun("b", "agent").duration_ms is None
