"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class VidsslError(Exception):
    """Bad input from the user: a path, a file, a config value. The message names the thing."""


def one_line(message: object) -> str:
    """Any text (e.g. a library's multi-line message) as one line."""
    return " ".join(str(message).split())


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (libraries put the cause there), or its type."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__
