import sys

from rganalysis.cli import main

sys.exit(main())
