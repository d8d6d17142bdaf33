"""The host functions componentize-py generates from ``step.wit``.

Imported on first use, not at import time, so the SDK's pure parts run in
plain CPython (unit tests) where no bindings exist.
"""


def host():
    """The generated ``stepwise:step/host`` module."""
    try:
        from wit_world.imports import host as bindings
    except ImportError as e:
        raise RuntimeError(
            "Stepwise host calls only work inside a step built with componentize-py "
            "(-d guest-sdk/wit -w step); outside Stepwise, test your pure code instead"
        ) from e
    return bindings
