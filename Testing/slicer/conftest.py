"""Pytest setup for TopoReg's Slicer-module tests (Testing/slicer/tests/).

Real MRML (slicer-core) + clearly named fakes of desktop-only modules; see support/toporeg_slicer_testing.py.

Two process-wide traps are handled here:
1. slicer-core's `import slicer` imports every module of every `slicer/` folder on sys.path, and pytest puts
   `Testing/` on sys.path: this very file can be imported as `slicer.conftest`. It then does nothing.
2. Without `__init__.py` files every conftest is the module `conftest`; pytest replaces `sys.modules["conftest"]`
   with this one, which breaks `from conftest import ...` in Testing/test_*.py collected after this folder.
   `pytest_plugin_registered` puts Testing/conftest.py back once this file is registered.
"""

import sys as _sys
from pathlib import Path as _Path

if not __name__.startswith("slicer."):
    _sys.path.insert(0, str(_Path(__file__).resolve().parent / "support"))

    import pytest as _pytest

    from toporeg_slicer_testing import MiniSlicer as _MiniSlicer
    from toporeg_slicer_testing import import_slicer as _import_slicer

    _import_slicer()
    _ROOT_CONFTEST = str(_Path(__file__).resolve().parent.parent / "conftest.py")

    def pytest_plugin_registered(plugin, plugin_name, manager):
        if getattr(plugin, "__file__", None) == __file__:
            root = manager.get_plugin(_ROOT_CONFTEST)
            if root is not None:
                _sys.modules["conftest"] = root

    @_pytest.fixture
    def mini_slicer(tmp_path):
        """A fresh headless Slicer (real scene and logics) installed as slicer.mrmlScene / slicer.modules."""
        mini = _MiniSlicer(tmp_path)
        yield mini
        mini.close()

    @_pytest.fixture(scope="session")
    def tiny_segmentation_model(tmp_path_factory):
        """One tiny trained segmentation model (support/uncertainty_testing.py) for every Uncertainty panel test."""
        from uncertainty_testing import train_tiny_tissue_model
        return train_tiny_tissue_model(tmp_path_factory.mktemp("models"))

    @_pytest.fixture(scope="session")
    def tiny_neuralizer_model(tmp_path_factory):
        """One tiny random Neuralizer (support/neuralizer_testing.py) for every Neuralizer panel test."""
        from neuralizer_testing import train_tiny_neuralizer
        return train_tiny_neuralizer(tmp_path_factory.mktemp("neuralizer_model"))
