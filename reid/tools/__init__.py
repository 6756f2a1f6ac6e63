"""Command-line tools, run as ``python -m reid.tools.<name>``."""
