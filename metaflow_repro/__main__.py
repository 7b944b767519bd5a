import sys

from metaflow_repro.cli.main import main

sys.exit(main())
