"""TopoReg's bundled sample data (`Resources/SampleData/manifest.json`) in Slicer's Sample Data module, offline.

Why a module of its own: the manifest is the one description of the files (roles, label names, checksums), so the
SampleData sources, the "load sample" entry point and TopoRegTest all derive from it instead of repeating names.

Each subject (MNI152, Colin27) is one SampleData source in the category "TopoReg": its image, brain mask and
label map, with `file://` URIs of the bundled files (SampleData copies them into its cache and checks the SHA256)
and a `customDownloader` that the SampleData button calls instead: it loads the bundled files directly, label
maps as label map nodes with a colour table carrying the manifest's region names (SampleData's own loader applies
one set of load properties to all files of a source, so it cannot load the T1 as a scalar volume and the masks as
label maps in one click).
"""

from __future__ import annotations

import colorsys
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import nodes

CATEGORY = "TopoReg"
SUBJECT_NAMES = {"mni152": "MNI152", "colin27": "Colin27"}   # manifest "subject" -> node name of its image
KIND_NAMES = {"brainmask": "brain mask", "tissue": "tissue", "aal": "AAL"}  # file name part -> node name suffix
TISSUE_COLORS = {"CSF": (0.35, 0.6, 0.95), "GM": (0.55, 0.55, 0.55), "WM": (0.95, 0.95, 0.9),
                 "brain": (0.95, 0.75, 0.2)}


@dataclass(frozen=True)
class SampleFile:
    path: Path
    node_name: str
    label: bool                                   # load as a label map (masks and label maps)
    labels: dict[int, str] = field(default_factory=dict)   # label value -> region name
    sha256: str = ""


@dataclass(frozen=True)
class SampleSource:
    """One SampleData entry: a subject's files, its image first."""

    name: str
    subject: str
    description: str
    files: tuple[SampleFile, ...]

    def missing(self) -> list[Path]:
        return [f.path for f in self.files if not f.path.is_file()]

    def registration_arguments(self, custom_downloader: Callable | None = None,
                               thumbnail: str | None = None) -> dict[str, Any]:
        """Keyword arguments of `SampleData.SampleDataLogic.registerCustomSampleDataSource` (Slicer >= 5.0)."""
        return {"category": CATEGORY, "sampleName": self.name, "uris": [f.path.as_uri() for f in self.files],
                "fileNames": [f.path.name for f in self.files], "nodeNames": [f.node_name for f in self.files],
                "loadFileType": ["VolumeFile"] * len(self.files),
                "checksums": [f"SHA256:{f.sha256}" if f.sha256 else None for f in self.files],
                "customDownloader": custom_downloader, "thumbnailFileName": thumbnail}


def manifest_path() -> Path:
    from toporeg.data import sample_data_dir

    return sample_data_dir() / "manifest.json"


def sample_sources(manifest: str | Path | None = None) -> list[SampleSource]:
    """The SampleData sources described by the manifest, one per subject in manifest order."""
    path = Path(manifest) if manifest is not None else manifest_path()
    entries = json.loads(path.read_text(encoding="utf-8"))["files"]
    by_subject: dict[str, list[dict]] = {}
    for entry in entries:
        by_subject.setdefault(entry["subject"], []).append(entry)
    sources = []
    for subject, items in by_subject.items():
        items.sort(key=lambda e: e["role"] != "image")          # the image first: it is what SampleData returns
        files = tuple(_sample_file(path.parent, subject, e) for e in items)
        image = next((e for e in items if e["role"] == "image"), items[0])
        sources.append(SampleSource(name=f"TopoReg {_subject_name(subject)}", subject=subject,
                                    description=image.get("description", ""), files=files))
    return sources


def _subject_name(subject: str) -> str:
    return SUBJECT_NAMES.get(subject, subject)


def _sample_file(folder: Path, subject: str, entry: dict) -> SampleFile:
    name = _subject_name(subject)
    if entry["role"] != "image":
        kind = entry["name"].split(".")[0].split("_")[1]        # colin27_aal_2mm.nii.gz -> aal
        name = f"{name} {KIND_NAMES.get(kind, kind)}"
    labels = {int(k): v for k, v in entry.get("labels", {}).items()}
    return SampleFile(path=folder / entry["name"], node_name=name, label=entry["role"] != "image",
                      labels=labels, sha256=entry.get("sha256", ""))


# --- loading ---------------------------------------------------------------------------------------------
def load_source(scene, source: SampleSource, only: tuple[str, ...] | None = None) -> list:
    """Load a source's files (or those whose node names are in `only`, in that order) into new nodes."""
    files = source.files if only is None else [next(f for f in source.files if f.node_name == n) for n in only]
    return [load_file(scene, f) for f in files]


def load_file(scene, sample: SampleFile):
    """One bundled file as a volume node; a label map gets a colour table with the manifest's region names."""
    node = nodes.load_volume_node(scene, sample.path, sample.node_name, label=sample.label)
    # as SampleData does: no storage node, so saving the scene writes a copy instead of pointing into the extension
    storage = node.GetStorageNode()
    node.SetAndObserveStorageNodeID(None)
    scene.RemoveNode(storage)
    if sample.label and sample.labels:
        node.GetDisplayNode().SetAndObserveColorNodeID(label_color_node(scene, f"{sample.node_name} labels",
                                                                         sample.labels).GetID())
    return node


def label_color_node(scene, name: str, labels: dict[int, str]):
    """A colour table named `name` with one named entry per label value (0 transparent); reused if present."""
    found = scene.GetFirstNodeByName(name)
    if found is not None and found.IsA("vtkMRMLColorTableNode"):
        return found
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetAttribute("Category", CATEGORY)
    node.SetNumberOfColors(max(labels) + 1)
    for value in range(max(labels) + 1):
        text = labels.get(value, "")
        rgb = TISSUE_COLORS.get(text) or colorsys.hsv_to_rgb((value * 0.618034) % 1.0, 0.65, 0.95)
        node.SetColor(value, text, *rgb, 0.0 if value == 0 else 1.0)
    return node


def find_source(name_or_subject: str, sources: list[SampleSource] | None = None) -> SampleSource:
    for source in sources or sample_sources():
        if name_or_subject in (source.name, source.subject, _subject_name(source.subject)):
            return source
    raise nodes.input_error(f"no TopoReg sample data named {name_or_subject!r}")


def load_sample_pair(scene, with_labels: bool = False) -> tuple:
    """The sample registration pair: (MNI152 T1 = fixed, Colin27 T1 = moving[, Colin27 AAL labels])."""
    sources = sample_sources()
    fixed = load_source(scene, find_source("mni152", sources), only=("MNI152",))[0]
    moving = load_source(scene, find_source("colin27", sources),
                         only=("Colin27", "Colin27 AAL") if with_labels else ("Colin27",))
    return (fixed, *moving)


class SampleLoader:
    """The SampleData button's `customDownloader`: loads the bundled files and shows them in the slice views.

    A class (not a lambda) so its repr is stable: SampleData skips a source registered twice by comparing reprs."""

    def __init__(self, source: SampleSource):
        self.source = source

    def __repr__(self) -> str:
        return f"TopoRegSampleLoader({self.source.name!r})"

    def __call__(self, _sample_data_source=None) -> list:
        import slicer
        import slicer.util

        loaded = load_source(slicer.mrmlScene, self.source)
        image = next(n for n, f in zip(loaded, self.source.files) if not f.label)
        labels = [n for n, f in zip(loaded, self.source.files) if f.label]
        slicer.util.setSliceViewerLayers(background=image, label=labels[-1] if labels else "keep-current", fit=True)
        return loaded


def register_sample_data(sample_data_module=None, thumbnail: str | None = None) -> list[SampleSource]:
    """Register every complete source with Slicer's SampleData module (called once Slicer has started)."""
    if sample_data_module is None:
        import SampleData as sample_data_module
    registered = []
    for source in sample_sources():
        if source.missing():
            logging.warning("TopoReg: sample data %s not registered, missing %s", source.name, source.missing())
            continue
        sample_data_module.SampleDataLogic.registerCustomSampleDataSource(
            **source.registration_arguments(SampleLoader(source), thumbnail))
        registered.append(source)
    return registered


def register_on_startup(app, thumbnail: str | None = None) -> None:
    """Defer the registration to Slicer's `startupCompleted()`: the SampleData module is loaded by then."""
    def register() -> None:
        try:
            register_sample_data(thumbnail=thumbnail)
        except Exception:  # never break Slicer's startup over sample data
            logging.exception("TopoReg: could not register the sample data")

    app.connect("startupCompleted()", register)
