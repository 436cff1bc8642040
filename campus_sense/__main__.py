import sys

from campus_sense.cli import main

sys.exit(main())
