"""The WSGI app built from the environment. A bad configuration exits with one line per problem."""

import sys

from .app import create_app
from .errors import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    for line in str(exc).splitlines():
        sys.stderr.write(f"alert24-adapter: configuration error: {line}\n")
    # gunicorn stops instead of respawning workers when loading the app exits with 4 (APP_LOAD_ERROR).
    sys.exit(4)
