"""The ``agentspool`` command: click commands only, each calling the library.

``main`` is the console script's entry point (``agentspool.worker.cli:main``).
"""

from agentspool.worker.cli.app import main

__all__ = ["main"]
