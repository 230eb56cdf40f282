"""Errors that mean "the user's input is wrong": the CLI prints them in one line, exit code 2."""


class LnlabError(ValueError):
    """Bad user input (unknown name, malformed file, out-of-range option, ...)."""


def one_line(e: BaseException | str) -> str:
    """The message of ``e`` on one line (the CLI's error output is always a single line)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__ if isinstance(e, BaseException) else ""
    return "; ".join(lines)
