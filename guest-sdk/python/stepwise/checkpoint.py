"""State a retry of this step resumes from.

Saved as JSON; a dataclass is saved as its fields and, given ``cls``, loaded
back as one.
"""

import dataclasses
import json
from typing import Any, Optional, Type, TypeVar

from ._bindings import host
from .errors import StepError
from .settings import parse

T = TypeVar("T")


def save(state: Any) -> None:
    """Save ``state`` (anything ``json`` encodes, or a dataclass), replacing the
    previous checkpoint."""
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        state = dataclasses.asdict(state)
    try:
        data = json.dumps(state).encode()
    except (TypeError, ValueError) as e:
        raise StepError(f"could not encode the checkpoint: {e}") from None
    save_bytes(data)


def load(cls: Optional[Type[T]] = None) -> Any:
    """The checkpoint an earlier attempt saved, or ``None``. With ``cls`` (a
    dataclass) it is parsed into one; a checkpoint that does not fit is an error
    rather than a silent fresh start, so a changed state type cannot make a
    step redo work it already did."""
    data = load_bytes()
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError as e:
        raise StepError(f"could not decode the checkpoint: {e}") from None
    if cls is None:
        return value
    try:
        return parse(cls, value, what="checkpoint")
    except StepError as e:
        raise StepError(e.message) from None


def save_bytes(data: bytes) -> None:
    """Save raw bytes, replacing the previous checkpoint."""
    try:
        host().checkpoint_save(bytes(data))
    except Exception as e:
        message = getattr(e, "value", e)
        raise StepError(f"could not save the checkpoint: {message}") from None


def load_bytes() -> Optional[bytes]:
    """The raw bytes an earlier attempt saved, or ``None``."""
    return host().checkpoint_load()
