"""`python -m lmsmith ARGS` is `lmsmith ARGS`."""

import sys

from lmsmith.cli import main

if __name__ == "__main__":
    sys.exit(main())
