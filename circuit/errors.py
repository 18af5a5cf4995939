"""Errors raised by the circuit layer.

```
CircuitError                  base of every error this package raises itself
├── CircuitOpenError          a call was refused by a breaker; nothing was sent
└── BreakerBoardError         the shared breaker board (Redis) failed; raised only to
                              ops actions, never on the call path
```

The retry policy raises no errors of its own: when it gives up, the caller gets the
last attempt's exception unchanged. pybreaker's `CircuitBreakerError` never leaves
this package.
"""

from __future__ import annotations


class CircuitError(Exception):
    """Base of the circuit layer's own errors."""


class CircuitOpenError(CircuitError):
    """A breaker refused the call: it is open, or half-open with every probe slot taken.

    No call was made, so no traffic reached the agent. `retry_after_s` is how long
    until the breaker may admit a probe (0 when it is half-open and merely full).
    """

    def __init__(self, message: str, *, name: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.name = name
        self.retry_after_s = retry_after_s


class BreakerBoardError(CircuitError):
    """The board that shares breakers across replicas could not be read or written.

    Raised `from` the backend's own exception. Calls never see it: only the
    publisher (which logs it and carries on) and ops actions (a 503 at the API).
    """

    def __init__(self, message: str, *, backend: str, operation: str) -> None:
        super().__init__(message)
        self.backend = backend
        self.operation = operation
