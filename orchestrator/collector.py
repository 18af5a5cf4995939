"""How the service tunes CPython's cyclic garbage collector.

Almost everything a workflow allocates dies by reference count the moment it is no
longer used; the cyclic collector only has to find reference cycles, which the hot
path does not make. Its generation-0 pass still runs every 700 container
allocations by default and scans every young object alive at that moment — with
50 workflows in flight that is mostly live, in-flight state, re-scanned over and
over and then promoted, so the older generations fill with it too. At 50 in flight
that was 10–18 % of the engine's CPU (bench/profile.py reports gc apart); with
the first threshold at 50,000 the same objects have mostly died before a pass
looks at them. `ORCH_GC_THRESHOLD` sets that first threshold (`0` leaves CPython's
defaults); what start-up built is frozen once the sockets listen (`freeze_startup`).
"""

from __future__ import annotations

import gc

# Older generations: a gen-1 pass every 20 gen-0 passes, a full pass every 100 gen-1
# passes (CPython also waits until 25 % of the long-lived objects are new).
_GEN1_EVERY = 20
_GEN2_EVERY = 100


def tune_collector(gen0_threshold: int) -> tuple[int, int, int]:
    """Apply the thresholds for `gen0_threshold` (0: keep the current ones); return them."""
    if gen0_threshold > 0:
        gc.set_threshold(gen0_threshold, _GEN1_EVERY, _GEN2_EVERY)
    first, second, third = gc.get_threshold()
    return first, second, third


def freeze_startup() -> None:
    """Move what start-up built (modules, schemas, compiled definitions) out of the
    collector's view: it lives as long as the process, so no full pass need re-scan it."""
    gc.freeze()
