"""The one exception type that front ends turn into a clear message and exit code 2."""


class NoveltynetsError(Exception):
    """Bad input or unusable files: the message is shown to the user as is."""
