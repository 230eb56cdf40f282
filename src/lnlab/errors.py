"""Errors that mean "the user's input is wrong": the CLI prints them in one line, exit code 2."""


class LnlabError(ValueError):
    """Bad user input (unknown name, malformed file, out-of-range option, ...)."""
