#!/usr/bin/env python3
"""Health probe of a `strangler serve` container, in the standard library only (no curl).

    strangler-healthcheck [PATH]      default PATH: /livez

Asks http://127.0.0.1:PORT/PATH and exits 0 on a 2xx answer, 1 otherwise. PORT is
STRANGLER_ADMIN_PORT when set (the admin surface then lives there only), else
STRANGLER_HEALTHCHECK_PORT, else 8080. With STRANGLER_ADMIN_TOKEN set the request carries
`Authorization: Bearer TOKEN`, so the probe passes the admin token gate without the token
ever appearing in a pod spec. The image's HEALTHCHECK runs it (the Helm chart probes /livez and
/readyz over HTTP); it imports nothing from the proxy, so it costs a bare interpreter start.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PATH = "/livez"
TIMEOUT_SECONDS = 2.0


def probe_url(path: str, env: dict[str, str]) -> str:
    port = env.get("STRANGLER_ADMIN_PORT") or env.get("STRANGLER_HEALTHCHECK_PORT") or "8080"
    return f"http://127.0.0.1:{int(port)}{path if path.startswith('/') else '/' + path}"


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else DEFAULT_PATH
    request = urllib.request.Request(probe_url(path, dict(os.environ)))
    token = os.environ.get("STRANGLER_ADMIN_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"{request.full_url}: {exc}", file=sys.stderr)
        return 1
    if 200 <= status < 300:
        return 0
    print(f"{request.full_url}: HTTP {status}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
