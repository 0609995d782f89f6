"""`python -m streamflow` runs the command line."""

from streamflow.cli import main

raise SystemExit(main())
