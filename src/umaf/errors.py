"""The one exception type that reaches users as a single line on stderr."""


class UmafError(Exception):
    """Bad input or an unusable file: the CLI prints ``umaf: error: <message>`` and exits with status 2."""
