"""Progress, secrets, where the step runs and what is left of its budget."""

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ._bindings import host
from .errors import PermanentError


def progress(percent: float, message: object = "") -> None:
    """Report progress: ``percent`` in 0..100 (the host clamps it) and a short
    message. Every call is one event on the dashboard and the WebSocket; for a
    loop over many items use :class:`Progress`."""
    host().progress(float(percent), str(message))


class Progress:
    """Counts items done out of a known total and reports at most once per
    whole percent (plus the last item), so a loop over a million rows costs
    about a hundred host calls."""

    def __init__(self, total: int):
        self.total = max(0, int(total))
        self.done = 0
        self._reported: Optional[int] = None

    def advance(self, message: object = "") -> None:
        """One more item is done."""
        self.set(self.done + 1, message)

    def set(self, done: int, message: object = "") -> None:
        """``done`` items are done (e.g. when resuming from a checkpoint)."""
        self.done = min(max(0, int(done)), self.total)
        percent = self.percent()
        whole = int(percent)
        if self._reported != whole or self.done == self.total:
            self._reported = whole
            progress(percent, message)

    def percent(self) -> float:
        """Percentage done, 0.0..100.0; a total of 0 is 100 %."""
        return 100.0 if self.total == 0 else self.done * 100.0 / self.total


def secret(name: str) -> Optional[str]:
    """A secret of the task (an API key, a password), or ``None`` when the task
    has none by that name. Never log or return it: the server masks secrets
    in every output, but a fingerprint is the way to show which one was used."""
    return host().secret(name)


def require_secret(name: str) -> str:
    """Like :func:`secret`, but a missing secret is a permanent error that
    names it and says what to do."""
    value = secret(name)
    if value is None:
        raise PermanentError(
            f"secret `{name}` is not set on this task; add it to the task's secrets"
        )
    return value


@dataclass
class Context:
    """Where the step runs."""

    task_id: int
    run_id: int
    step_id: int
    #: 1 for the first attempt, 2 for the first retry, ...
    attempt: int
    #: The task's details (key -> JSON value), e.g. what a shop admin entered.
    details: Dict[str, Any] = field(default_factory=dict)


def context() -> Context:
    """Ids, which attempt this is, and the task's details."""
    raw = host().context()
    try:
        details = json.loads(raw.details)
    except ValueError:
        details = {}
    return Context(
        task_id=raw.task_id,
        run_id=raw.run_id,
        step_id=raw.step_id,
        attempt=raw.attempt,
        details=details if isinstance(details, dict) else {},
    )


@dataclass
class Budget:
    """What is left of the step's budget."""

    #: Fuel units left (one unit is roughly one wasm instruction).
    fuel: int
    #: Wall-clock seconds left before the deadline.
    seconds: float


def remaining() -> Budget:
    """Fuel and time left, e.g. to stop at a clean point and save a checkpoint
    before the budget runs out."""
    raw = host().remaining()
    return Budget(fuel=raw.fuel, seconds=raw.millis / 1000.0)
