"""Start the TopoReg web server: the access policy first (nothing is imported or bound when it refuses), then the
page, the HTTP guard, the download route, and trame's server on the chosen host and port.

Where the guard sits: trame serves the page, its scripts and the websocket from one aiohttp application that wslink
creates; trame hands it to `on_server_bind` before it starts, and an aiohttp middleware added there runs before
every route (static files, the `/ws` upgrade, our downloads). So a request without the token never reaches trame:
no page, no state, no websocket.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .access import AccessPolicy, check_bind, configured_token, is_loopback, middleware
from .data_folder import DataFolder

log = logging.getLogger("toporeg.web")
READY_LINE = "TopoReg web: serving"


def _download_route(app):
    from aiohttp import web

    from .panels.results_panel import DOWNLOAD_ROUTE

    async def download(request):
        node = app.results.allowed(request.match_info["node_id"])
        if node is None:
            raise web.HTTPNotFound(text="TopoReg: no such result (only the results listed in the page)\n")
        try:
            path = app.runtime.export(node)
        except Exception as exc:  # noqa: BLE001 - one line to the browser, details in the server log
            log.exception("TopoReg web: export of %s failed", node.GetName())
            raise web.HTTPInternalServerError(text=f"TopoReg: cannot export '{node.GetName()}': {exc}\n")
        return web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'})

    return f"/{DOWNLOAD_ROUTE}/{{node_id}}", download


def serve(data_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
          work_dir: str | Path | None = None) -> int:
    """Serve until interrupted. Raises `AccessError` (host/token policy) or `NotADirectoryError` before any import
    of slicer-core or any bind."""
    token = configured_token(token)
    check_bind(host, token)
    data = DataFolder(data_dir)
    # trame must not parse `toporeg serve`'s own arguments (it reads sys.argv unless TRAME_ARGS is set)
    os.environ["TRAME_ARGS"] = ""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # headless: no X server needed

    from trame.app import get_server

    from .app import TopoRegWebApp

    server = get_server(None, client_type="vue3")
    app = TopoRegWebApp(data, server, work_dir)
    policy = AccessPolicy(token)
    route, handler = _download_route(app)

    def bind(wslink_server) -> None:
        wslink_server.app.middlewares.append(middleware(policy))
        wslink_server.app.router.add_get(route, handler)

    def ready(**_) -> None:
        shown = host if ":" not in host else f"[{host}]"
        url = f"http://{shown}:{server.port}/"
        where = "loopback only" if is_loopback(host) else "network"
        guard = "access token required: append ?token=<token> to the URL" if policy.required else "no token"
        print(f"{READY_LINE} {data.root} at {url} ({where}; {guard})", flush=True)

    server.controller.on_server_bind.add(bind)
    server.controller.on_server_ready.add(ready)
    server.start(host=host, port=port, open_browser=False, timeout=0, show_connection_info=False)
    return 0

