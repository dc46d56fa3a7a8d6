"""Slicer glue of the TopoReg module: Qt-free helpers that need only slicer-core (MRML, logics, slicer.util).

Nothing here imports `qt`, `ctk` or `slicer.app`, so every helper runs inside the desktop application, in
`Slicer --no-main-window --python-script`, and in plain Python with the `slicer-core` wheel (the tests).
The `toporeg` library is imported lazily, inside functions: the module must load (and offer to install
missing packages) even before torch, nibabel or SimpleITK are importable.

- `params`: the registration parameters (names shared with the module's parameter node) and choices.
- `nodes`: MRML volume / labelmap / segmentation nodes <-> `toporeg.io.Volume`, with exact geometry.
- `transform_nodes`: displacement field -> grid transform node, reference roles, overlays, warping along.
- `landmarks`: target registration error from paired markups.
- `outputs`: one result type for in-process and background runs.
- `runner`: the `toporeg` command line in a background process (progress, cancel, log).
- `background`: what every panel's background run shares (temporary folder, runner, one conclusion).
- `registration_logic`: the registration workflow on MRML nodes (`RegistrationLogic`).
- `topology_logic`: the topology heatmap workflow (`TopologyLogic`, `toporeg topology` in the background).
- `topology_display`: map overlays (heatmap, entropy): colour map, fixed window, legend attributes, composite nodes.
- `uncertainty_logic`: segmentation with uncertainty (`UncertaintyLogic`, `toporeg segment` in the background).
- `uncertainty_display`: segmentation nodes with standard terminology; sampled masks shown one at a time.
- `neuralizer_logic`: few-shot tasks from context pairs (`NeuralizerLogic`, `toporeg neuralize` in the background).
- `neuralizer_context`: context pairs and named context sets (scene nodes, JSON files in a user folder).
- `install`: first-use dependency check and careful installation.
"""
