"""``python -m fangwire``: the same as the ``fangwire`` command."""

import sys

from fangwire.cli import main

sys.exit(main())
