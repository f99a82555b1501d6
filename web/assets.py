"""Static files with Subresource Integrity: every served file is hashed once, at startup.

Our own files live in web/static/; the third-party ones are the exact dist files npm pinned in
web/package-lock.json (``npm ci`` puts them in web/node_modules/), served as they are — no build
step, no CDN, nothing downloaded at run time. Only files named in the catalog can be served, so a
request path never reaches the file system (no traversal to worry about).

Templates write ``{{ script("htmx.js") }}``: a ``<script>`` tag whose URL carries a content hash
(safe to cache forever) and whose ``integrity`` attribute makes the browser refuse a file that
was changed after startup.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mimetypes
from pathlib import Path

import msgspec
from markupsafe import Markup, escape

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
NODE_MODULES = WEB_DIR / "node_modules"

# URL name -> file inside node_modules, pinned by package-lock.json.
VENDOR_FILES: dict[str, str] = {
    "htmx.js": "htmx.org/dist/htmx.min.js",
    "htmx-ws.js": "htmx-ext-ws/dist/ws.min.js",
    "uplot.js": "uplot/dist/uPlot.iife.min.js",
    "uplot.css": "uplot/dist/uPlot.min.css",
    # The API docs page (/docs, web/api_docs.py).
    "swagger-ui.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
}
# Cached for a year: the URL changes whenever the content does.
IMMUTABLE = "public, max-age=31536000, immutable"


class Asset(msgspec.Struct, frozen=True):
    """One servable file: where it is, its SRI hash and a short content tag for the URL."""

    name: str
    path: str
    integrity: str  # "sha384-<base64>"
    tag: str  # first hex digits of the sha256, used as ?v= for cache busting
    media_type: str


class AssetCatalog:
    """The files the dashboard may serve, hashed once when the app starts."""

    def __init__(self, static_dir: Path = STATIC_DIR, node_modules: Path = NODE_MODULES) -> None:
        self.assets: dict[str, Asset] = {}
        self.missing: list[str] = []
        for path in sorted(p for p in static_dir.rglob("*") if p.is_file()):
            self._add(path.relative_to(static_dir).as_posix(), path)
        for name, relative in VENDOR_FILES.items():
            path = node_modules / relative
            if path.is_file():
                self._add(name, path)
            else:
                self.missing.append(name)
        if self.missing:
            # The pages still render (htmx enhances plain forms and links); say how to fix it.
            log.warning(
                "front-end files missing (%s): run `npm ci` in web/ (scripts/setup.sh does)",
                ", ".join(self.missing),
            )

    def _add(self, name: str, path: Path) -> None:
        data = path.read_bytes()
        integrity = "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        tag = hashlib.sha256(data).hexdigest()[:12]
        self.assets[name] = Asset(name, str(path), integrity, tag, media_type)

    def url(self, name: str) -> str:
        """The cache-busting URL of an asset."""
        asset = self.assets.get(name)
        return f"/static/{name}?v={asset.tag}" if asset else f"/static/{name}"

    def script(self, name: str) -> Markup:
        """A ``<script>`` tag with SRI, or nothing when the file is missing."""
        asset = self.assets.get(name)
        if asset is None:
            return Markup("")
        return Markup(
            '<script src="{}" integrity="{}" crossorigin="anonymous" defer></script>'
        ).format(self.url(name), asset.integrity)

    def stylesheet(self, name: str) -> Markup:
        """A ``<link rel=stylesheet>`` tag with SRI, or nothing when the file is missing."""
        asset = self.assets.get(name)
        if asset is None:
            return Markup("")
        return Markup(
            '<link rel="stylesheet" href="{}" integrity="{}" crossorigin="anonymous">'
        ).format(self.url(name), escape(asset.integrity))
