"""Peer registration methods, each returning its mapping as OUR displacement: RAS mm on the fixed grid,
x_moving = x_fixed + u(x_fixed), plus the wall time and peak memory of the registration call alone.

Every peer also hands back its own warped image; `direction_check` pulls the moving image through the
returned `u` with our sampler and correlates it with that image, so a sign or LPS/RAS slip cannot go
unnoticed (the harness records the correlation for every run).

Peak memory: before the call, garbage is collected and glibc's `malloc_trim(0)` returns freed heap to
the OS (else a method could reuse pages an earlier method freed and look free of cost). On Linux the
kernel's RSS high-water mark (VmHWM) is then reset through /proc/self/clear_refs and read after the
call, so the number is the peak RSS during the call minus the RSS before it (C/C++ allocations
included, no sampling gaps). Elsewhere a psutil thread samples RSS every 5 ms (it can miss short
peaks, and cannot run while a C extension holds the GIL). Methods run in one process, so memory a
library keeps cached from an earlier call is not counted again.
"""

from __future__ import annotations

import ctypes
import gc
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..io.itk_convert import sitk_from_volume, volume_from_sitk
from ..io.volume import Volume, lps_from_affine
from ..transforms.fields import RAS_TO_LPS, physical_from_itk_volume
from .metrics import warp_with_physical_field


@dataclass
class PeerResult:
    u_ras: np.ndarray
    seconds: float
    peak_rss_mb: float
    notes: str = ""
    warped: Volume | None = None


Method = Callable[[Volume, Volume], PeerResult]


# --- measuring -------------------------------------------------------------------------------------------
def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise KeyError(field)


class Measure:
    """Context manager: `.seconds` (wall) and `.peak_mb` (peak RSS above the starting RSS) of its body."""

    def __enter__(self) -> "Measure":
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self._hwm = False
        try:
            Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
            self._base = _status_kb("VmRSS")
            self._hwm = True
        except OSError:
            import psutil
            proc = psutil.Process()
            self._base = proc.memory_info().rss / 1024
            self._peak = self._base
            self._stop = threading.Event()

            def sample() -> None:
                while not self._stop.wait(0.005):
                    self._peak = max(self._peak, proc.memory_info().rss / 1024)
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t0
        if self._hwm:
            peak = _status_kb("VmHWM")
        else:
            self._stop.set()
            self._thread.join()
            peak = self._peak
        self.peak_mb = max(peak - self._base, 0.0) / 1024


def direction_check(result: PeerResult, fixed: Volume, moving: Volume, mask: np.ndarray | None = None) -> float:
    """Correlation between moving pulled through `result.u_ras` by our sampler and the peer's own output."""
    if result.warped is None:
        return float("nan")
    ours = warp_with_physical_field(moving, fixed, result.u_ras).data
    theirs = np.asarray(result.warped.data, np.float64).reshape(ours.shape)
    sel = (np.ones(ours.shape, bool) if mask is None else mask.reshape(ours.shape)) & ((ours != 0) | (theirs != 0))
    return float(np.corrcoef(ours[sel], theirs[sel])[0, 1])


def _float(volume: Volume) -> Volume:
    return volume.with_data(np.asarray(volume.data, np.float32), is_label=False)


# --- identity baseline -----------------------------------------------------------------------------------
def identity(fixed: Volume, moving: Volume) -> PeerResult:
    """No registration: the scores of the images as they lie in world space (the 'before' row)."""
    u = np.zeros(fixed.grid_shape + (3,))
    return PeerResult(u, 0.0, 0.0, "u = 0", warp_with_physical_field(_float(moving), fixed, u))


# --- ANTs (antspyx) --------------------------------------------------------------------------------------
def _ants_image(volume: Volume):
    import ants
    direction, spacing, origin = lps_from_affine(volume.affine)
    return ants.from_numpy(np.asarray(volume.data, np.float32), origin=tuple(map(float, origin)),
                           spacing=tuple(map(float, spacing)), direction=direction)


def _ants_field(fixed_img, moving_img, transforms: list[str], tmp: str) -> np.ndarray:
    """Compose ANTs forward transforms into one displacement field on the fixed grid (LPS) → RAS mm."""
    import ants
    import SimpleITK as sitk
    path = ants.apply_transforms(fixed=fixed_img, moving=moving_img, transformlist=transforms,
                                 compose=str(Path(tmp) / "fwd_"))
    return physical_from_itk_volume(volume_from_sitk(sitk.ReadImage(path)))


def ants_method(type_of_transform: str, note: str, **kw: Any) -> Method:
    """An antspyx `ants.registration` call with these settings (timed alone; field composition is not)."""
    def run(fixed: Volume, moving: Volume) -> PeerResult:
        import ants
        f, m = _ants_image(_float(fixed)), _ants_image(_float(moving))
        with tempfile.TemporaryDirectory() as tmp:
            with Measure() as meas:
                reg = ants.registration(f, m, type_of_transform=type_of_transform, outprefix=str(Path(tmp) / "r_"), **kw)
            u = _ants_field(f, m, reg["fwdtransforms"], tmp)
        warped = fixed.with_data(reg["warpedmovout"].numpy().astype(np.float32), is_label=False)
        return PeerResult(u, meas.seconds, meas.peak_mb, note, warped)
    return run


def ants_affine_then_synonly_cc(fixed: Volume, moving: Volume) -> PeerResult:
    """ANTs 'Affine', then 'SyNOnly' with CC (radius 4) and (100, 70, 50) iterations from that affine."""
    import ants
    f, m = _ants_image(_float(fixed)), _ants_image(_float(moving))
    with tempfile.TemporaryDirectory() as tmp:
        with Measure() as meas:
            aff = ants.registration(f, m, type_of_transform="Affine", outprefix=str(Path(tmp) / "a_"))
            reg = ants.registration(f, m, type_of_transform="SyNOnly", initial_transform=aff["fwdtransforms"],
                                    syn_metric="CC", syn_sampling=4, reg_iterations=(100, 70, 50),
                                    outprefix=str(Path(tmp) / "s_"))
        u = _ants_field(f, m, reg["fwdtransforms"], tmp)
    warped = fixed.with_data(reg["warpedmovout"].numpy().astype(np.float32), is_label=False)
    return PeerResult(u, meas.seconds, meas.peak_mb, "ANTs Affine, then SyNOnly CC[4] (100,70,50)", warped)


# --- SimpleITK diffeomorphic demons --------------------------------------------------------------------------
def _sitk_affine(f, m):
    """Moments-centred affine, Mattes MI, 3 levels (shrink 4/2/1, σ 2/1/0 vox), regular-step GD."""
    import SimpleITK as sitk
    init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(f.GetDimension()),
                                           sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(init, inPlace=False)
    return reg.Execute(f, m)


def sitk_demons(fixed: Volume, moving: Volume, iterations: tuple[int, int, int] = (60, 40, 20)) -> PeerResult:
    """SimpleITK affine (above), histogram matching, then DiffeomorphicDemons on a 3-level pyramid (4/2/1); 2D or 3D."""
    import SimpleITK as sitk
    f = sitk.Cast(sitk_from_volume(_float(fixed)), sitk.sitkFloat32)
    m = sitk.Cast(sitk_from_volume(_float(moving)), sitk.sitkFloat32)
    dim = f.GetDimension()
    with Measure() as meas:
        affine = _sitk_affine(f, m)
        m_aff = sitk.Resample(m, f, affine, sitk.sitkLinear, 0.0)
        m_aff = sitk.HistogramMatching(m_aff, f, 1024, 7, True)
        field = None
        for shrink, sigma, iters in zip((4, 2, 1), (2.0, 1.0, 0.0), iterations):
            fl = sitk.Shrink(sitk.SmoothingRecursiveGaussian(f, sigma * min(f.GetSpacing())) if sigma else f, [shrink] * dim)
            ml = sitk.Shrink(sitk.SmoothingRecursiveGaussian(m_aff, sigma * min(f.GetSpacing())) if sigma else m_aff, [shrink] * dim)
            if field is None:
                field = sitk.Image(fl.GetSize(), sitk.sitkVectorFloat64, dim)
                field.CopyInformation(fl)
            else:
                field = sitk.Resample(field, fl, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
            demons = sitk.DiffeomorphicDemonsRegistrationFilter()
            demons.SetNumberOfIterations(iters)
            demons.SetSmoothDisplacementField(True)
            demons.SetStandardDeviations(1.5)
            field = demons.Execute(fl, ml, field)
        field = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    composite = sitk.CompositeTransform(dim)
    composite.AddTransform(affine)  # applied last: φ(x) = A(x + d(x))
    composite.AddTransform(sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64)))
    disp = sitk.TransformToDisplacementField(composite, sitk.sitkVectorFloat64, f.GetSize(), f.GetOrigin(),
                                             f.GetSpacing(), f.GetDirection())
    u = physical_from_itk_volume(volume_from_sitk(disp))
    warped = volume_from_sitk(sitk.Resample(m, f, composite, sitk.sitkLinear, 0.0))
    note = f"SimpleITK MI affine + histogram matching + DiffeomorphicDemons σ=1.5, levels 4/2/1, iterations {iterations}"
    return PeerResult(u, meas.seconds, meas.peak_mb, note, warped)


# --- elastix (itk-elastix) -----------------------------------------------------------------------------------
def _itk_image(volume: Volume):
    import itk
    direction, spacing, origin = lps_from_affine(volume.affine)
    img = itk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume.data, np.float32).T))  # [k, j, i]
    img.SetOrigin([float(o) for o in origin])
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
    return img


def elastix_default(fixed: Volume, moving: Volume, max_iterations: int | None = None) -> PeerResult:
    """elastix default 'affine' then default 'bspline' parameter maps (Mattes MI, 4 levels each, 256
    iterations per level); `max_iterations` overrides the iteration count (tests only)."""
    import itk
    register, deformation = itk.elastix_registration_method, itk.transformix_deformation_field  # lazy loads: untimed
    f, m = _itk_image(_float(fixed)), _itk_image(_float(moving))
    params = itk.ParameterObject.New()
    for kind in ("affine", "bspline"):
        pmap = params.GetDefaultParameterMap(kind)
        if max_iterations is not None:
            pmap["MaximumNumberOfIterations"] = [str(max_iterations)]
        params.AddParameterMap(pmap)
    with tempfile.TemporaryDirectory() as tmp:
        with Measure() as meas:
            warped_img, result = register(f, m, parameter_object=params, log_to_console=False, output_directory=tmp)
        field = deformation(m, result, output_directory=tmp)  # else transformix writes into the cwd
    lps = np.asarray(itk.GetArrayFromImage(field), np.float64).transpose(2, 1, 0, 3)  # [i, j, k, c], LPS mm
    warped = fixed.with_data(np.asarray(itk.GetArrayFromImage(warped_img), np.float32).T, is_label=False)
    return PeerResult(lps * RAS_TO_LPS, meas.seconds, meas.peak_mb, "elastix default affine + bspline maps", warped)


# --- the set --------------------------------------------------------------------------------------------------
def peer_methods(*, slow: bool = False) -> dict[str, Method]:
    """Name → method for every peer that imports here; `slow` adds ANTs SyNOnly CC (100,70,50) (minutes)."""
    methods: dict[str, Method] = {"identity": identity}
    available = _available()
    if "ants" in available:
        methods["ants_affine"] = ants_method("Affine", "ANTs 'Affine' (MI, 4 levels)")
        methods["ants_syn"] = ants_method("SyN", "ANTs 'SyN' default: affine + SyN MI, reg_iterations (40,20,0)")
        methods["ants_synquick_s"] = ants_method(
            "antsRegistrationSyNQuick[s]", "antsRegistrationSyNQuick[s]: rigid + affine + SyN MI (100,70,50,0)")
        if slow:
            methods["ants_synonly_cc"] = ants_affine_then_synonly_cc
    methods["sitk_demons"] = sitk_demons
    if "itk" in available:
        methods["elastix_bspline"] = elastix_default
    return methods


def _available() -> set[str]:
    import importlib.util
    return {name for name in ("ants", "itk") if importlib.util.find_spec(name) is not None}
