"""``python -m fasp``: the same program as the ``fasp-ascp`` console script."""

from fasp.cli.ascp import script

script()
