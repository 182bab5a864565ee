"""``python -m ysoscale`` is the ``ysoscale`` command."""

from ysoscale.cli import main

raise SystemExit(main())
