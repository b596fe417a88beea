"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class VidsslError(Exception):
    """Bad input from the user: a path, a file, a config value. The message names the thing."""
