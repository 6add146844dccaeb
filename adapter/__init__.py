"""alert24-adapter: forwards Prometheus Alertmanager webhooks to Alert24 as incident events."""

from .app import create_app
from .version import __version__

__all__ = ["__version__", "create_app"]
