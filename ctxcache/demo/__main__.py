"""``python -m ctxcache.demo``."""

import sys

from ctxcache.demo.cli import main

sys.exit(main())
