"""Allow ``python -m distmtl``."""

from distmtl.cli import main

raise SystemExit(main())
