"""``python -m forkserver``: the same program as the ``forkserver`` script."""

from forkserver.cli import main

raise SystemExit(main())
