"""The error type for mistakes a user can fix (bad file, bad key, unknown name).

The CLI prints a UserError as one message, without a traceback, and exits non-zero; the HTTP
service maps it to a 4xx. A bug still raises its own exception type.
"""


class UserError(Exception):
    """Something the user can fix; the message names what is wrong and how to fix it."""
