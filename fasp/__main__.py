"""``python -m fasp``: the same program as the ``fasp-ascp`` console script."""

from fasp.cli.ascp import main

raise SystemExit(main())
