"""``python -m bench`` (``make bench``): run the benchmark; see bench/cli.py for flags."""

from bench.cli import main

raise SystemExit(main())
