"""`python -m worker_service`: see worker_service.cli."""

import sys

from worker_service.cli import main

if __name__ == "__main__":
    sys.exit(main())
