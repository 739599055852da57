import sys

from mcn.cli import main

sys.exit(main())
