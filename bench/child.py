"""Run one bench function in a fresh interpreter: ``python -m bench.child MODULE:FUNC JSON``.

The function gets the JSON object as keyword arguments; its return value is printed
as ``RESULT <json>``. Functions may call ``common.ready_and_wait()`` to start in step
with their siblings.
"""

from __future__ import annotations

import importlib
import json
import sys

from bench.common import announce


def main() -> int:
    target, kwargs = sys.argv[1], json.loads(sys.argv[2])
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(f"bench.{module_name}"), func_name)
    announce("RESULT", func(**kwargs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
