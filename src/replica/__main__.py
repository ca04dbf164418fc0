import sys

from replica.steps import main

sys.exit(main())
