"""Where lmsmith keeps its state: $LMSMITH_HOME, default ~/.lmsmith."""

import os
from pathlib import Path


def lmsmith_home() -> Path:
    return Path(os.environ.get("LMSMITH_HOME") or Path.home() / ".lmsmith").expanduser()
