"""``python -m loadtest``: see :mod:`loadtest.cli`."""

from .cli import main

raise SystemExit(main())
