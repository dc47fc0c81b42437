"""The one exception type for problems the user can fix (bad data, bad config, bad paths).

The CLI prints its message as a single line and exits non-zero, without a traceback.
It subclasses ValueError so library callers can catch either.
"""


class VQVAEError(ValueError):
    """A problem with the user's input, stated in one line that names the bad value."""


class Preempted(KeyboardInterrupt):
    """Training was asked to stop by a signal (SIGTERM: how clusters preempt a job); the checkpoint is saved,
    and ``--resume`` continues. A KeyboardInterrupt, so it unwinds as Ctrl-C does."""
