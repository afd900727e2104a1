"""``fasp-ascp``'s command line: argv to ``Config``, exit codes and messages, and the human progress line.

The top layer: may import everything; nothing in the engine imports it.
"""
