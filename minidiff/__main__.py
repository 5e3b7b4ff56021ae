"""Entry point for ``python -m minidiff``."""

from minidiff.cli import main

raise SystemExit(main())
