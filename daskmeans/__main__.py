"""``python -m daskmeans``: the same command line as ``daskmeans``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
