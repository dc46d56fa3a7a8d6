"""GUI sections of the TopoReg panel that would make TopoReg.py too long: each takes the loaded `.ui` widgets and
its Qt-free logic (TopoRegLogic), forwards clicks, and shows progress, status and the full log of a failed run.

- `background_panel`: what the sections below share for a background run: Apply/Cancel, progress, status, the log
  of a failed run (`BackgroundPanel`).
- `topology_panel`: the Topology heatmap section (`TopologyPanel`).
- `uncertainty_panel`: the Uncertainty section (`UncertaintyPanel`).
- `neuralizer_panel`: the Neuralizer section (`NeuralizerPanel`): context list, context sets, run.
- `warp_along`: the Registration section's "Warp along" selector bound to the parameter node (`WarpAlongSelector`).
"""
