"""`python -m cuemsg`: the `cuemsg` command (`cuemsg.cli.main`)."""

import sys

from cuemsg.cli import main

sys.exit(main())
