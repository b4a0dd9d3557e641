"""The lab's tests reuse the product tests' helpers (tiny data sets, subprocess environment)."""
import sys
from pathlib import Path

# tests/ holds plain modules (no package): put it on the path, as pytest does for its own tests.
_PRODUCT_TESTS = str(Path(__file__).resolve().parents[2] / "tests")
if _PRODUCT_TESTS not in sys.path:
    sys.path.insert(0, _PRODUCT_TESTS)
