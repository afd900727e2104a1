"""The ascp vocabulary: one table of flags, the parser and the typed ``Config`` it yields, aspera.conf, help text.

Modules, each importing only those before it: ``vocabulary`` (the shared words: policies, checksums, ciphers,
...), ``values`` (the forms a value takes), ``filters`` (-E/-N
rules), ``table`` (one entry per flag), ``asperaconf`` (-f FILE, its schema
from the table), ``flags`` (tokenizer, ``Config``, parse), ``helptext`` (--help and docs/ascp-options.md).
Imports nothing of the engine but ``fasp.errors``: every other layer reads its options from here.
"""
