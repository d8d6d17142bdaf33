"""The errors a step raises to fail."""


class StepError(Exception):
    """The step failed with this message; the task's retry policy applies.

    Right for what may pass: a mail server that timed out, a database that was
    down. Pass ``permanent=True`` (or raise :class:`PermanentError`) when no
    retry can help.
    """

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class PermanentError(StepError):
    """Trying again cannot help (settings out of range, a missing secret): the
    task fails at once instead of being retried with backoff."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True)
