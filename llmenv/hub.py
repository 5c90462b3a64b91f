"""Whether the Hugging Face Hub can be reached, decided in milliseconds instead of a minute of retries.

`huggingface_hub` retries a failed request five times with back-off, so an offline
`from_pretrained` or `load_dataset` takes 25-45 s to fail. Models and datasets ask `hub_reachable()`
first (one TCP connection to the Hub or the proxy in front of it) and fail at once with a message
that says how to work offline. This module only probes; it never downloads.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 3.0
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_endpoint() -> str:
    """The Hub URL huggingface_hub talks to (`HF_ENDPOINT` or https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable() -> bool:
    """Whether a TCP connection to the Hub (or its proxy) opens within 3 s; False when offline is set."""
    from huggingface_hub import constants

    if constants.is_offline_mode() or any(
        os.environ.get(var, "").upper() in {"1", "ON", "YES", "TRUE"} for var in _OFFLINE_VARS
    ):
        return False
    url = urlsplit(constants.ENDPOINT)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or "", proxy_url.port or 80
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False
