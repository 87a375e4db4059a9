"""The base of every error that is the user's to fix (bad input, missing data, nothing to report).

The command line prints these as one line and exits with status 2; so does any ValueError
raised while validating arguments (unknown model, bad ratio, bad recipe field).
"""


class UserError(Exception):
    """A mistake in what was asked for, or in the files it points at; the message says how to fix it."""
