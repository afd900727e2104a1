"""``python -m fasp``: the same program as the ``fasp-ascp`` console script."""
from fasp.cli import main

raise SystemExit(main())
