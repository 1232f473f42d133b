"""``python -m loadtest``: see :mod:`loadtest.cli`."""

from .cli import main

if __name__ == "__main__":  # not when a --processes worker imports it
    raise SystemExit(main())
