"""``python -m bench apply|library [options]``: dispatch to ``bench.apply`` or ``bench.library``."""

from __future__ import annotations

import importlib
import sys

JOBS = {"apply": "bench.apply", "library": "bench.library"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in JOBS:
        print(f"usage: python -m bench {{{'|'.join(JOBS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(JOBS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
