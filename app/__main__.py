"""``python -m app`` is the ``acme-delegate`` command."""

from app.cli import main

main()
