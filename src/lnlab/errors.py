"""Errors that mean "the user's input is wrong": the CLI prints them in one line, exit code 2."""


class LnlabError(ValueError):
    """Bad user input (unknown name, malformed file, out-of-range option, ...)."""


def one_line(e: BaseException | str) -> str:
    """The message of ``e`` on one line (the CLI's error output is always a single line)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__ if isinstance(e, BaseException) else ""
    return "; ".join(lines)


MAX_ERROR_CHARS = 300


def error_summary(exc: BaseException) -> str:
    """``TypeName: first line of the message``, capped: a failed run's error in the store.

    Unlike ``one_line`` (a user error's whole message, for the CLI) this keeps the exception's
    type, since a failed run's error is usually a bug, and it stays short for a progress bar.
    """
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
