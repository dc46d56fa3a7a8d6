"""The README / extension-catalogue screenshots, rendered from REAL Slicer slice views (`scripts/make_screenshots.py`).

- `common`: paths, logging, the module's Qt-free logic on the path, one panel run (background CLI or reused outputs);
- `views`: the trame-slicer `SlicerApp` (real MRML scene, slice logics, displayable managers), offscreen slice views
  rendered through EGL, captures, colour nodes, slice positions;
- `figure`: the PIL side (canvas, rows of captured views, colour bars, caption lines, PNG);
- `registration`, `topology`, `uncertainty`, `neuralizer`: one screenshot each, `make(workdir, out, reuse)`
  (`neuralizer`: also `model`).
"""
