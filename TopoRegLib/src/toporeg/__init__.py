"""TopoReg: topology-aware medical image registration (library; never imports slicer)."""

__version__ = "0.1.0"
