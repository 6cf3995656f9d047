"""User-facing errors: anything raised as :class:`DistmtlError` is printed as one line and exits 2."""

#: Key of what a Train run returns when it stopped because training failed (its value: the reason).
FAILURE_KEY = "failure"



class DistmtlError(Exception):
    """A problem with the user's input (config, search space, file, flag) rather than a bug."""


class ConfigError(DistmtlError):
    """A configuration or search-space file is malformed, names an unknown key, or holds a bad value."""


class RunFailed(Exception):
    """A run's training failed (e.g. its loss diverged); the message is the one-line reason (exit status 1)."""
