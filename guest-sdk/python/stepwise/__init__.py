"""Write Stepwise steps in Python.

A step is one function from typed settings to a JSON-able output::

    from dataclasses import dataclass, field
    import stepwise

    @dataclass
    class Settings:
        orders: list[int]
        file: str = "orders.csv"

    @stepwise.step
    def export_orders(settings: Settings) -> dict:
        done = stepwise.checkpoint.load() or 0
        if done == 0:
            stepwise.artifact.write(settings.file, "order_id\\n")
        progress = stepwise.Progress(len(settings.orders))
        for order in settings.orders[done:]:
            stepwise.artifact.append(settings.file, f"{order}\\n")
            done += 1
            stepwise.checkpoint.save(done)
            progress.advance(f"exported order {order}")
        return {"exported": done, "file": settings.file}

Build it with componentize-py (``guest-sdk/python/README.md``) and upload the
``.wasm``. Settings that do not fit the dataclass fail the step permanently with
the path of the offending field; raise :class:`StepError` to fail (retried by the
task's policy) or :class:`PermanentError` when no retry can help. Any other
exception fails the step with its type and message, and its traceback goes to
the step log.

The host calls only work inside Stepwise; everything else (settings parsing,
errors, your own helpers) imports and runs in plain CPython, so it can be
unit-tested there.
"""

from . import artifact, checkpoint, log
from .errors import PermanentError, StepError
from .host import (
    Budget,
    Context,
    Progress,
    context,
    progress,
    remaining,
    require_secret,
    secret,
)
from .settings import parse
from .step import step

__all__ = [
    "Budget",
    "Context",
    "PermanentError",
    "Progress",
    "StepError",
    "artifact",
    "checkpoint",
    "context",
    "log",
    "parse",
    "progress",
    "remaining",
    "require_secret",
    "secret",
    "step",
]
