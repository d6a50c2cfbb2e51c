"""``python -m fic_middleware`` is the ``fic`` command."""

import sys

from .cli import main

sys.exit(main())
