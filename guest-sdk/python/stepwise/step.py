"""Turning a plain function into the component's ``run`` export."""

import dataclasses
import inspect
import json
import sys
import traceback
import typing
from typing import Any, Callable

from ._bindings import host
from .errors import PermanentError, StepError
from .settings import parse


def step(fn: Callable) -> Callable:
    """Make ``fn`` the step's ``run``.

    ``fn`` takes no argument, or the settings: annotated with a dataclass they
    are parsed into it (see :mod:`stepwise.settings`), otherwise passed as the
    parsed JSON. It returns the step's output: anything ``json`` encodes, or a
    dataclass.

    componentize-py looks for a class ``WitWorld`` in the app module; the
    decorator puts one there, so the module needs nothing else. The function
    itself is returned unchanged, to be called in tests.
    """
    module = sys.modules[fn.__module__]
    if getattr(module, "WitWorld", None) is not None:
        raise RuntimeError(
            f"`{fn.__name__}`: module {fn.__module__} already has a step; "
            "a component exports one `run`, so use @stepwise.step once"
        )

    class WitWorld:
        def run(self, settings: str) -> str:
            return _run(fn, settings)

    module.WitWorld = WitWorld
    return fn


def call_json(fn: Callable, settings: str) -> str:
    """Parse ``settings``, call ``fn`` and encode its output; raises
    :class:`StepError` like the step would fail. For tests of a whole step."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        output = fn()
    else:
        text = settings.strip()
        try:
            value = json.loads(text) if text not in ("", "null") else {}
        except ValueError as e:
            raise PermanentError(f"invalid settings: {e}") from None
        hint = typing.get_type_hints(fn).get(params[0].name, Any)
        output = fn(parse(hint, value) if dataclasses.is_dataclass(hint) else value)
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        output = dataclasses.asdict(output)
    try:
        return json.dumps(output)
    except (TypeError, ValueError) as e:
        raise StepError(f"could not encode the step's output as JSON: {e}") from None


def _run(fn: Callable, settings: str) -> str:
    try:
        return call_json(fn, settings)
    except StepError as e:
        if e.permanent:
            host().mark_permanent()
        message = e.message
    except Exception as e:  # an unexpected failure: its traceback helps the author
        bindings = host()
        bindings.log(bindings.Level.ERROR, "step raised:\n" + traceback.format_exc())
        message = f"{type(e).__name__}: {e}"
    from componentize_py_types import Err

    raise Err(message)
