import sys

from cuemsg.cli import main

sys.exit(main())
