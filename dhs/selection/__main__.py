import sys

from dhs.selection.cli import main

sys.exit(main())
