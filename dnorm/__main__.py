"""``python -m dnorm``: the command line of :mod:`dnorm.cli`."""

from .cli import main

raise SystemExit(main())
