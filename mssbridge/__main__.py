"""Entry point for ``python -m mssbridge``."""

from mssbridge.cli import app

app()
