"""``python -m scratchlm`` is the ``scratchlm`` command."""

from scratchlm.cli import main

raise SystemExit(main())
