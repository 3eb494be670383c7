import sys

from levibot.cli import main

sys.exit(main())
