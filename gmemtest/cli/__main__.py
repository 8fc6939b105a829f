"""`python -m gmemtest.cli`: the gmemtest command."""

import sys

from . import main

sys.exit(main())
