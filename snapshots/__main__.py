"""`python -m snapshots PATH...`: the same as `memwarden analyze PATH...`."""

import sys

from snapshots.cli import main

sys.exit(main())
