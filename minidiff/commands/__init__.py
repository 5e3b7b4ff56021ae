"""One module per subcommand of ``python -m minidiff``.

Each module defines ``HELP`` (one line for ``--help``), ``add_arguments(parser)`` and ``run(args)``.
Heavy imports (torch, the networks) happen inside ``run`` so that ``--help`` stays instant.
"""
