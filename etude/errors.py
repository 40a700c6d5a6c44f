"""The one error type for user mistakes: the CLI prints its message as one line and exits 2, no traceback."""


class UsageError(Exception):
    """Bad input from the user (arguments, config, files); the message names what is wrong."""
