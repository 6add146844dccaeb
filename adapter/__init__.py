"""alert24-adapter: forwards Prometheus Alertmanager webhooks to Alert24 as incident events."""

from .version import __version__

__all__ = ["__version__", "create_app"]


def __getattr__(name: str):
    # Loaded on first use, so that importing adapter.gunicorn_conf can prepare prometheus_client's
    # multiprocess directory before anything imports prometheus_client.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'adapter' has no attribute {name!r}")
