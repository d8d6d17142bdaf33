"""Named files of the run (an export, a dump, an outbox), downloadable through
``GET /api/v1/runs/{id}/artifacts/{name}``."""

from ._bindings import host
from .errors import StepError


def write(name: str, data: "str | bytes") -> None:
    """Create or replace the artifact ``name`` (text is written as UTF-8)."""
    _put(name, data, False)


def append(name: str, data: "str | bytes") -> None:
    """Append to the artifact ``name``, creating it if needed."""
    _put(name, data, True)


def _put(name: str, data: "str | bytes", append: bool) -> None:
    if isinstance(data, str):
        data = data.encode()
    try:
        host().artifact_write(name, bytes(data), append)
    except Exception as e:  # componentize_py_types.Err carries the host's message
        raise StepError(f"could not write artifact `{name}`: {_message(e)}") from None


def _message(error: Exception) -> str:
    return str(getattr(error, "value", error))
