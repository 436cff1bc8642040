"""Alias of ``campus-sense notify`` (collector/notify/cli.py)."""
import sys

from .cli import main

sys.exit(main())
