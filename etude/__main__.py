import sys

from etude.cli import main

sys.exit(main())
