import sys

from replica.warm import main

sys.exit(main(sys.argv[1:]))
