"""The one exception type the command line turns into a clear message."""


class EtlError(Exception):
    """A problem the user can act on: bad input, bad spec, bad target.

    The message names what is wrong and where (site, file, line, key, rule);
    the command line prints it without a traceback.
    """
