"""repreval's built-in plugins, one subpackage per entry point (``[project.entry-points.repreval]``).

They import only :mod:`repreval.api` (a test enforces it) and register through the same hooks as any
third-party plugin; block one with ``--block NAME`` like any other.
"""
