"""The web UI: ``create_app(client, authorize=...)`` returns an ASGI app to mount in a
FastAPI or Starlette application (``app.mount("/jobs", ui)``) or to serve on its own
(``pyriver ui``). Needs the ``ui`` extra: ``pip install 'pyriver_async[ui]'``.

See docs/ui.md for mounting, authentication, the read-only mode and the settings.
"""

from __future__ import annotations

try:
    import jinja2 as _jinja2  # noqa: F401
    import starlette as _starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError("the web UI needs its extra: pip install 'pyriver_async[ui]'") from exc

from .app import DEFAULT_REDACT_KEYS, UIApp, create_app
from .auth import ALLOW_ALL, Access, Principal, any_of, basic_auth, bearer_token

__all__ = [
    "ALLOW_ALL",
    "DEFAULT_REDACT_KEYS",
    "Access",
    "Principal",
    "UIApp",
    "any_of",
    "basic_auth",
    "bearer_token",
    "create_app",
]
