"""Lines in the step's log (shown with the run, streamed to the dashboard).

``print`` works too (stdout is logged at info, stderr at warn); these choose the
level.
"""

from ._bindings import host


def _log(level: str, message: object) -> None:
    bindings = host()
    bindings.log(getattr(bindings.Level, level), str(message))


def trace(message: object) -> None:
    """Very detailed tracing."""
    _log("TRACE", message)


def debug(message: object) -> None:
    """Details that help debugging."""
    _log("DEBUG", message)


def info(message: object) -> None:
    """Normal progress worth keeping."""
    _log("INFO", message)


def warn(message: object) -> None:
    """Something odd that did not stop the step."""
    _log("WARN", message)


def error(message: object) -> None:
    """Something failed."""
    _log("ERROR", message)
