"""``python -m ftsdk.cli``."""

import sys

from ftsdk.cli import main

sys.exit(main())
