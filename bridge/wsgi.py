import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bridge.settings")

application = get_wsgi_application()

# Build the URL resolver now, not on each worker's first request: with gunicorn's preload_app the
# forked workers then start warm.
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018
