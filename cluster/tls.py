"""One TLS context for every short-lived HTTP client of the runtime.

httpx builds a fresh `ssl.SSLContext` (loading the whole CA bundle) for each client it creates,
even for plain-http URLs: about 20-70 ms of CPU on these machines. The nemesis, the etcd
target and the launcher open a client per admin or status call, so a partition of a loaded
cluster spent most of its landing time in that. Sharing one context keeps certificate
verification exactly as httpx's default, and pays for it once.
"""

from __future__ import annotations

import ssl
from functools import cache

import certifi


@cache
def shared_tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's CA bundle), built once per process."""
    return ssl.create_default_context(cafile=certifi.where())
