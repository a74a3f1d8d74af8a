"""Settings for the test suite: the production settings, with test-only secrets."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
os.environ.setdefault("ALLOWED_HOSTS", "*")

from bridge.settings import *  # noqa: F403
from bridge.settings import DATABASES

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so that worker subprocesses started by the tests see the same data.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"bridge-test-{os.getpid()}.sqlite3")
    }

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DELIVERY_BACKOFF_BASE = 0.05
DELIVERY_BACKOFF_MAX = 0.5
# Live-server and worker threads must not keep connections that block dropping the test database.
DATABASES["default"]["CONN_MAX_AGE"] = 0
CONN_MAX_AGE_SECONDS = 0  # the LINE inbox's own connection too
# Signing in is not what the tests measure: a fast hasher (production keeps Django's PBKDF2).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
