"""``python -m engine.settings --write`` regenerates configs/default.yaml and docs/configuration.md;
``--check`` exits 1 when a committed copy differs from the classes."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .render import DEFAULTS_FILE, DOCS_FILE, render_defaults, render_docs


def main(argv: Optional[List[str]] = None) -> int:
    """Write or check the generated files; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m engine.settings", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="Write configs/default.yaml and docs/configuration.md.")
    group.add_argument("--check", action="store_true", help="Exit 1 when either file differs from the classes.")
    args = parser.parse_args(argv)
    stale = []
    for path, text in ((DEFAULTS_FILE, render_defaults()), (DOCS_FILE, render_docs())):
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
        elif not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(str(path))
    if stale:
        print(f"out of date (run python -m engine.settings --write): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
