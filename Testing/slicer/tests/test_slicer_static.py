"""Static checks of the Slicer module: .ui <-> TopoReg.py names, CMake manifest, syntax, class bases, size limits."""

from __future__ import annotations

import ast
import py_compile
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from toporeg_slicer_testing import MODULE_DIR

UI_FILE = MODULE_DIR / "Resources" / "UI" / "TopoReg.ui"
MODULE_FILE = MODULE_DIR / "TopoReg.py"
LOGIC_DIR = MODULE_DIR / "TopoRegLogic"
WIDGETS_DIR = MODULE_DIR / "TopoRegWidgets"  # GUI sections kept out of TopoReg.py: they use self.ui too


def _ui():
    return ET.parse(UI_FILE).getroot()


def _widgets():
    return {w.get("name"): w for w in _ui().iter("widget")}


def _prop(widget, name):
    prop = next((p for p in widget.findall("property") if p.get("name") == name), None)
    if prop is None:
        return None
    child = next(iter(prop))
    return child.text if child.tag != "stringlist" else [s.text for s in child]


def _module_tree():
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def _ui_names_used(tree) -> set[str]:
    """`self.ui.<name>` and `ui.<name>` (a local alias of self.ui)."""
    def is_ui(node):
        return (isinstance(node, ast.Name) and node.id == "ui") or (
            isinstance(node, ast.Attribute) and node.attr == "ui" and isinstance(node.value, ast.Name)
            and node.value.id == "self")

    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and is_ui(node.value)}


def test_every_ui_attribute_used_in_the_module_exists_in_the_ui_file():
    used = _ui_names_used(_module_tree())
    assert used, "TopoReg.py should use self.ui.<widget>"
    for path in sorted(WIDGETS_DIR.glob("*.py")):
        used |= _ui_names_used(ast.parse(path.read_text(encoding="utf-8")))
    assert {"uncertaintyApplyButton", "nextSampleButton", "uncertaintyModelComboBox", "neuralizerApplyButton",
            "neuralizerContextList", "computeHeatmapButton"} <= used
    assert used <= set(_widgets()), f"missing in TopoReg.ui: {sorted(used - set(_widgets()))}"


def test_ui_parameter_names_are_the_parameter_node_fields():
    bound = {_prop(w, "SlicerParameterName") for w in _widgets().values()} - {None}
    cls = next(n for n in _module_tree().body if isinstance(n, ast.ClassDef) and n.name == "TopoRegParameterNode")
    fields = {stmt.target.id for stmt in cls.body if isinstance(stmt, ast.AnnAssign)}
    from TopoRegLogic.params import DEFAULTS, NODE_LIST_FIELDS, PANEL_DEFAULTS, WIDGET_SYNCED_FIELDS

    # a list of nodes has no GUI connector in Slicer (TopoRegWidgets/warp_along.py binds it); the model combo box is
    # editable (TopoReg.py writes its text into the parameter node on Apply)
    synced = set(WIDGET_SYNCED_FIELDS)
    assert bound | synced == fields == set(DEFAULTS) | set(PANEL_DEFAULTS) | set(NODE_LIST_FIELDS)
    assert not bound & synced


def test_every_mrml_selector_receives_the_scene():
    widgets = _widgets()
    selectors = {name for name, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    root = _ui().find("widget").get("name")
    connected = {c.findtext("receiver") for c in _ui().iter("connection")
                 if c.findtext("sender") == root and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    checkable = {name for name, w in widgets.items() if w.get("class") == "qMRMLCheckableNodeComboBox"}
    assert selectors and selectors == connected - checkable and "warpAlongSelector" in connected
    for name in selectors:
        assert _prop(widgets[name], "nodeTypes"), name


def test_ui_sections_and_research_use_label():
    widgets = _widgets()
    assert widgets["registrationCollapsibleButton"].get("class") == "ctkCollapsibleButton"
    assert _prop(widgets["registrationCollapsibleButton"], "text") == "Registration"
    assert (_prop(widgets["topologyCollapsibleButton"], "text"), _prop(widgets["topologyCollapsibleButton"],
                                                                       "enabled")) == ("Topology heatmap", "true")
    assert (_prop(widgets["uncertaintyCollapsibleButton"], "text"),
            _prop(widgets["uncertaintyCollapsibleButton"], "enabled")) == ("Uncertainty", "true")
    models = [i.find("property/string").text for i in widgets["uncertaintyModelComboBox"].findall("item")]
    assert models == ["unet", "ensemble", "mcdropout", "probunet"]
    assert [i.find("property/string").text for i in widgets["uncertaintyTaskComboBox"].findall("item")] == \
        ["tissue", "brain"]
    assert widgets["uncertaintySamplesSpinBox"].get("class") == "QSpinBox"
    button = widgets["neuralizerCollapsibleButton"]
    assert (_prop(button, "text"), _prop(button, "collapsed"), _prop(button, "enabled")) == \
        ("Neuralizer", "true", "true")
    assert [i.find("property/string").text for i in widgets["neuralizerTaskComboBox"].findall("item")] == \
        ["segment", "image"]
    assert [i.find("property/string").text for i in widgets["neuralizerPlaneComboBox"].findall("item")] == \
        ["axial", "coronal", "sagittal"]
    assert widgets["neuralizerContextList"].get("class") == "QListWidget"
    assert "Research use only" in _prop(widgets["researchUseLabel"], "text")
    for name in ("applyButton", "cancelButton", "progressBar", "statusLabel"):
        assert name in widgets
    items = [i.find("property/string").text for i in widgets["methodComboBox"].findall("item")]
    assert items == ["optimize", "learned", "dio", "carl"]


def _cmake_listed():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8").replace("${MODULE_NAME}", "TopoReg")
    listed = set()
    for block in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        body = re.search(rf"set\({block}\n(.*?)\n\s*\)", text, re.S).group(1)
        listed |= {line.split("#")[0].strip() for line in body.splitlines()} - {""}
    return listed


def test_cmake_lists_every_module_file_and_nothing_missing():
    # TopoRegWeb/ is the browser app (`toporeg serve`, trame-slicer): it lives beside the logic it reuses but is not
    # part of the Slicer extension, so CMake must not ship it
    files = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"
             and p.relative_to(MODULE_DIR).parts[0] != "TopoRegWeb"}
    listed = _cmake_listed()
    assert files == listed, f"unlisted: {sorted(files - listed)}; listed but absent: {sorted(listed - files)}"


@pytest.mark.parametrize("path", sorted(p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py")))
def test_module_python_compiles_and_stays_small(path, tmp_path):
    py_compile.compile(str(MODULE_DIR / path), cfile=str(tmp_path / "x.pyc"), doraise=True)
    limit = 400 if path == "TopoReg.py" else 300  # the module file holds the four Slicer classes
    assert len((MODULE_DIR / path).read_text(encoding="utf-8").splitlines()) < limit


def test_module_classes_subclass_the_slicer_bases():
    bases = {n.name: [ast.unparse(b) for b in n.bases] for n in _module_tree().body if isinstance(n, ast.ClassDef)}
    assert bases["TopoReg"] == ["ScriptedLoadableModule"]
    assert bases["TopoRegWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases["TopoRegLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["TopoRegTest"] == ["ScriptedLoadableModuleTest"]


@pytest.mark.parametrize("path", sorted(p.name for p in LOGIC_DIR.glob("*.py")))
def test_logic_package_is_qt_free_and_imports_toporeg_lazily(path):
    tree = ast.parse((LOGIC_DIR / path).read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m.split(".")[0] in ("qt", "ctk", "toporeg", "torch", "nibabel", "SimpleITK")]
    inner = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    inner += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in inner if m.split(".")[0] in ("qt", "ctk")]
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "app"
                and isinstance(n.value, ast.Name) and n.value.id == "slicer"]


def test_choices_match_the_library():
    from toporeg.cli import segment_cmd
    from toporeg.cli.register_cmd import METHODS
    from toporeg.dio.solver import SOLVER_TRANSFORMS
    from toporeg.registration import PRESETS, TRANSFORM_MODELS, available_similarities

    from TopoRegLogic import params, uncertainty_logic

    assert (uncertainty_logic.METHODS, uncertainty_logic.TASKS) == (segment_cmd.METHODS, segment_cmd.TASKS)

    assert params.METHODS == METHODS
    assert params.PRESETS == tuple(PRESETS)
    assert params.TRANSFORM_MODELS == TRANSFORM_MODELS
    assert set(params.DIO_TRANSFORMS) == set(SOLVER_TRANSFORMS)
    assert set(params.SIMILARITIES) == set(available_similarities())


def test_importing_slicer_with_testing_on_sys_path_is_harmless():
    """slicer-core scans every `slicer/` folder on sys.path: Testing/slicer/ must contribute nothing but an inert
    conftest (test modules live in tests/, helpers in support/ and fakes/, none of which is a package)."""
    testing = str(MODULE_DIR.parent / "Testing")
    code = (f"import sys; sys.path.insert(0, {testing!r}); import slicer; "
            "print(sorted(m for m in sys.modules if m.startswith('slicer.') and not m.startswith('slicer.slicer_')"
            " and m != 'slicer.util')); print(hasattr(slicer, 'pytest_plugin_registered'), hasattr(slicer, 'qt'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["['slicer.conftest']", "False False"]
