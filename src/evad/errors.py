"""Exceptions that the command line turns into a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, an argument, a config value).

    The message should name the file or argument and the problem in one line; `evad` prints it and
    exits with status 2.
    """
