"""TopoReg in the browser: the Slicer module's panels next to real Slicer slice views, served by trame-slicer.

`toporeg serve` (TopoRegLib/src/toporeg/cli/serve_cmd.py) puts this module folder on sys.path and calls
`TopoRegWeb.serve.serve(...)`. The web app reuses the module's Qt-free Logic (`TopoRegLogic`) unchanged: trame-slicer's
`SlicerApp` owns the MRML scene and the application logic, the panel logics get that scene injected, and background
runs of the `toporeg` CLI are polled from trame's asyncio loop instead of a QTimer.

- `access`: who may connect (loopback by default; an access token, required once configured). Pure Python.
- `data_folder`: the server's data folder; every path a page sends is confined to it. Pure Python.
- `runtime`: the headless Slicer runtime (scene, views, logics, `slicer.mrmlScene`), no UI.
- `jobs`: one background run at a time, polled every 0.2 s, with progress, cancel and errors in the page state.
- `panels/`: one module per panel (data, registration, topology, uncertainty, Neuralizer, results).
- `app`: the page (four-up views + panels); `serve`: start-up checks, HTTP guard, downloads, server start.

The desktop Slicer never imports this package (it is not a module: no `TopoRegWeb.py` beside `TopoReg.py`), and
importing it does not import `slicer`: `access` and `data_folder` are usable (and tested) without slicer-core.
"""
