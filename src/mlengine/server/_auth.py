"""The bearer token check (``api_token``): one rule for the middleware in front of every route
and for the predict fast path that skips it."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

__all__ = ["PUBLIC_PATHS", "BearerToken"]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
"""The health checks, open without the token (probes rarely carry one); every other route,
/metrics included, needs it."""


class BearerToken:
    """Checks requests for ``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def accepts(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """True when one of the ASGI `headers` (lower-case names) is an Authorization header
        carrying the token: the scheme in any case (RFC 9110), the token compared in constant
        time."""
        for name, value in headers:
            if name == b"authorization":
                scheme, _, credentials = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                ):
                    return True
        return False
