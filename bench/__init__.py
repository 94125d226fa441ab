"""lmsmith's benchmarks, run as modules from the repository root: `python -m bench.serve.serve_cpu ...`.

Importing this package puts the checkout's `src/` first on the path (the only path setup in bench/), so a
benchmark measures the code next to it even where lmsmith is not installed (the GPU machines). Shared code
lives in `bench.common`; every result is written through `bench._result`. bench/README.md lists them all.
"""

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
