"""acme-delegate: least-privilege ACME DNS-01 credentials over DigitalOcean."""

__version__ = "0.1.0"
