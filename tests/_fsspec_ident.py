"""An fsspec HTTP client factory that says which process sends each request.

Used by tests/test_object_store.py as the ``get_client`` storage option: the
option travels (by reference) in the task graph, but the header is made where
the session is opened, so the HTTP server's log tells the client's requests
from the workers'. Importable by the test's worker processes (PYTHONPATH).
"""

from __future__ import annotations

import os

import aiohttp

HEADER = "X-Daskmeans-Test-Pid"


async def get_client(**kwargs):
    headers = dict(kwargs.pop("headers", None) or {})
    headers[HEADER] = str(os.getpid())
    return aiohttp.ClientSession(headers=headers, **kwargs)
