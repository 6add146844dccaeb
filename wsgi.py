"""The WSGI entry point: `gunicorn wsgi:app`."""

from adapter.wsgi import app

__all__ = ["app"]
