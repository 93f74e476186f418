import sys

from broker_filter.cli import main

sys.exit(main())
