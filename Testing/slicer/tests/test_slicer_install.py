"""First-use dependency handling, with injected module lookup, versions, questions and pip (no network)."""

from __future__ import annotations

import importlib.metadata

import pytest

from TopoRegLogic import install


def _finder(missing):
    return lambda name: None if name in missing else object()


def _versions(name):
    table = {"numpy": "1.26.4", "SimpleITK": "2.5.7", "vtk": "9.6.0", "torch": "2.13.0+cpu"}
    if name not in table:
        raise importlib.metadata.PackageNotFoundError(name)
    return table[name]


def test_nothing_to_do_when_everything_imports():
    asked = []
    assert install.ensure_dependencies(asked.append, find_spec=_finder(set()), pip_install=pytest.fail)
    assert not asked


def test_missing_packages_are_installed_after_asking_with_protected_versions_pinned(tmp_path):
    missing = {"nibabel", "safetensors", "toporeg"}
    calls, questions = [], []
    bundled = tmp_path / "TopoRegLib"
    bundled.mkdir()
    (bundled / "pyproject.toml").write_text("[project]\nname='toporeg'\n", encoding="utf-8")

    def pip_install(args):
        calls.append(list(args))
        if "-c" in args:
            constraints = args[args.index("-c") + 1]
            calls.append(open(constraints).read())
        missing.difference_update({"nibabel", "safetensors"} if "-c" in args else {"toporeg"})

    def ask(text):
        questions.append(text)
        return True

    assert install.ensure_dependencies(ask, pip_install=pip_install, find_spec=lambda n: None if n in missing else 1,
                                       version=_versions, bundled_toporeg=bundled)
    assert "nibabel" in questions[0] and "never replaced" in questions[0]
    assert calls[0][-2:] == ["nibabel", "safetensors"]
    assert calls[1] == "SimpleITK==2.5.7\nnumpy==1.26.4\ntorch==2.13.0+cpu\nvtk==9.6.0\n"
    assert calls[2] == ["--no-deps", str(bundled)]


def test_declining_installs_nothing():
    assert not install.ensure_dependencies(lambda text: False, find_spec=_finder({"nibabel"}),
                                           pip_install=pytest.fail)


def test_torch_only_through_pytorch_utils():
    with pytest.raises(install.DependencyError, match="install the 'PyTorch' extension"):
        install.ensure_dependencies(lambda text: True, find_spec=_finder({"torch"}), pip_install=pytest.fail)
    installed = []
    state = {"torch"}
    torch_installer = (lambda: "torch" not in state, lambda: (installed.append(1), state.clear()))
    assert install.ensure_dependencies(lambda text: True, find_spec=lambda n: None if n in state else 1,
                                       pip_install=pytest.fail, torch_installer=torch_installer)
    assert installed == [1]


def test_simpleitk_is_never_pip_installed():
    with pytest.raises(install.DependencyError, match="SimpleITK is part of Slicer"):
        install.ensure_dependencies(lambda text: True, find_spec=_finder({"SimpleITK"}), pip_install=pytest.fail)


def test_pip_plan_never_names_a_protected_package(tmp_path):
    report = install.DependencyReport(missing=["torch", "SimpleITK", "nibabel"], toporeg_importable=True)
    plan = install.pip_plan(report, tmp_path / "c.txt")
    assert plan == [["-c", str(tmp_path / "c.txt"), "nibabel"]]
    with pytest.raises(install.DependencyError, match="reinstall the extension"):
        install.pip_plan(install.DependencyReport(toporeg_importable=False), tmp_path / "c.txt", tmp_path)


def test_this_environment_is_complete():
    assert install.check_dependencies().ok
