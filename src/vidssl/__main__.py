import sys

from vidssl.cli.main import main

sys.exit(main())
