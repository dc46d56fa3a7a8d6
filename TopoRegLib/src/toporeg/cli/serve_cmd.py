"""`toporeg serve [--data DIR] [--host 127.0.0.1] [--port N] [--token T]`: TopoReg in the browser.

The web app lives with the Slicer module (`TopoReg/TopoRegWeb`, next to the module's Qt-free logic it reuses), not in
this library, which never imports `slicer`. This command finds that folder (`--module-dir`, $TOPOREG_MODULE_DIR, or
the repository layout beside an editable install), puts it on sys.path and hands over to `TopoRegWeb.serve`.
The host/token policy is checked before anything heavy is imported, so a refused start-up is immediate.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from ..errors import InputError, TopoRegError

MODULE_ENV = "TOPOREG_MODULE_DIR"
INSTALL_HINT = "install the web extra: pip install 'toporeg[web]' (trame-slicer[standalone]==2.0.0)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="TopoReg in the browser: the Slicer module's panels next to real Slicer slice views",
        description="Serves a web page (trame-slicer) with a four-up view (axial, 3D, sagittal, coronal) and the "
                    "TopoReg panels: load volumes from the data folder, register, topology heatmap, uncertainty, "
                    "Neuralizer, download results. Binds to loopback by default; a non-loopback --host needs an "
                    "access token (--token or $TOPOREG_SERVE_TOKEN), which every request must then carry "
                    "(open http://HOST:PORT/?token=TOKEN).")
    p.add_argument("--data", type=Path, default=None,
                   help="folder whose images the page may load, nothing outside it (default: the bundled sample data)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--token", default=None,
                   help="access token (at least 16 characters), required on every request once set; "
                        "default $TOPOREG_SERVE_TOKEN")
    p.add_argument("--module-dir", type=Path, default=None,
                   help=f"the TopoReg Slicer module folder holding TopoRegWeb (default ${MODULE_ENV}, else the "
                        "repository's TopoReg/)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where runs and downloads are written (default: a temporary folder removed at exit)")
    p.set_defaults(func=run)


def module_dir(given: Path | None = None) -> Path:
    """The folder that holds `TopoRegWeb` and `TopoRegLogic`."""
    import toporeg

    candidates = [given] if given is not None else []
    if given is None and os.environ.get(MODULE_ENV):
        candidates.append(Path(os.environ[MODULE_ENV]))
    if given is None:
        candidates.append(Path(toporeg.__file__).resolve().parents[3] / "TopoReg")  # TopoRegLib/src/toporeg
    for folder in candidates:
        if (folder / "TopoRegWeb" / "__init__.py").is_file() and (folder / "TopoRegLogic").is_dir():
            return folder.resolve()
    raise InputError(f"cannot find the TopoReg module folder with TopoRegWeb (looked in "
                     f"{', '.join(str(c) for c in candidates)}); give --module-dir or set ${MODULE_ENV}")


def run(args: argparse.Namespace) -> int:
    folder = module_dir(args.module_dir)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    from TopoRegWeb.access import AccessError, check_bind, configured_token

    try:
        check_bind(args.host, configured_token(args.token))
    except AccessError as exc:
        raise TopoRegError(str(exc)) from None
    if not (1 <= args.port <= 65535):
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    for package in ("trame_slicer", "trame", "slicer"):
        if importlib.util.find_spec(package) is None:
            raise TopoRegError(f"the browser app needs '{package}', which is not installed: {INSTALL_HINT}")
    if args.data is None:
        from ..data.resources import sample_data_dir

        args.data = sample_data_dir()
    if not args.data.is_dir():
        raise InputError("data folder not found", args.data)
    from TopoRegWeb.serve import serve

    try:
        return serve(args.data, host=args.host, port=args.port, token=args.token, work_dir=args.work_dir)
    except ImportError as exc:  # e.g. trame-slicer without [standalone], or another slicer-core / vtk than it pins
        raise TopoRegError(f"the browser app cannot start ({exc}); {INSTALL_HINT}") from exc
