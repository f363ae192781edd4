"""``python -m pyriver_async.cli``: the same as the ``pyriver`` console script."""

from pyriver_async.cli import main

raise SystemExit(main())
