"""`python -m iris`: the `iris` command."""

import sys

from iris.cli import main

if __name__ == "__main__":
    sys.exit(main())
