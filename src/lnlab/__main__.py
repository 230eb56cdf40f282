import sys

from lnlab.cli import main

sys.exit(main())
