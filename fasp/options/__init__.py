"""The ascp vocabulary: one table of flags, the parser and the typed ``Config`` it yields, aspera.conf, help text.

Imports nothing of the engine but ``fasp.errors``: every other layer reads its options from here.
"""
