"""The pieces of the ``dnorm`` command (:mod:`dnorm.cli`): reports, backends, files, plots, timings."""


class CommandError(Exception):
    """A user error the command reports as one line on stderr, with exit status 2."""
