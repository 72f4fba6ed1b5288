"""``python -m taco_rl ...`` is the ``taco`` command."""

import sys

from taco_rl.runners.cli import main

sys.exit(main())
