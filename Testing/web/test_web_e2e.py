"""End to end in a real browser: `toporeg serve` started here on 127.0.0.1 (a free port) with a data folder holding
the bundled sample pair (and the two brain masks), driven by Selenium in headless Debian Chromium.

One user session, in order: the page shows four real Slicer views; load the pair and the masks from the data
folder (a name outside the folder, sent as a hand-crafted client would, is refused in the page); register (progress
in the page, and the server answers other clicks meanwhile); cancel a heatmap run; compute the heatmap, hide and
show it, change its opacity, and check on the streamed axial view that the overlay pixels change where the heatmap
is; pick two context pairs and run the Neuralizer on the registered volume; download a result over HTTP.

Runs are kept short as in the Slicer tests: preset fast, 20 ELBO fit iterations, the bundled Neuralizer with 2
bootstrapped contexts and no affine alignment (the sample images are already in MNI-like space).
The page screenshot goes to Resources/Screenshots/web_panel.png when TOPOREG_UPDATE_SCREENSHOTS=1, else to tmp.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request

import numpy as np
import pytest

from web_browser import Page, browser_missing
from web_testing import REPO, SAMPLE_DATA, start_server, web_stack_missing

SAMPLES = ("mni152_t1_2mm.nii.gz", "colin27_t1_2mm.nii.gz", "colin27_brainmask_2mm.nii.gz",
           "mni152_brainmask_2mm.nii.gz")
RUN_TIMEOUT = 240  # seconds for one background run on a loaded 2-core machine


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    missing = web_stack_missing() or browser_missing()
    if missing:
        pytest.skip(f"browser end-to-end test skipped: {missing}")
    tmp = tmp_path_factory.mktemp("web_e2e")
    data = tmp / "data"
    data.mkdir()
    for name in SAMPLES:
        shutil.copy(SAMPLE_DATA / name, data / name)
    server = start_server(tmp, "--data", str(data), "--work-dir", str(tmp / "work"))
    page = None
    try:
        page = Page(server.url)
        yield server, page, tmp
    finally:
        if page is not None:
            page.close()
        server.stop()


def _axial_changes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels of two axial-view images that differ by more than JPEG noise."""
    return np.abs(a - b).max(axis=-1) > 40


def _save(folder, **views) -> None:
    """The compared view images, kept with the test's files for a look when an assertion fails."""
    from PIL import Image

    for name, pixels in views.items():
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"axial_{name}.png")


def test_browser_session(session):
    server, page, tmp = session
    timings = {"server start": server.start_seconds, "page ready": page.ready_seconds}
    start = time.monotonic()

    # --- the page: four real views, the panels, the research-use note ---------------------------------------------
    for tag in ("Red", "Yellow", "Green", "ThreeD"):
        assert page.view_image(tag).get_attribute("naturalWidth") not in (None, "0")
    assert "Research use only" in page.find(".toporeg-research-use").text
    assert page.state("data_files") == sorted(SAMPLES)
    for panel in ("toporeg-nz", "toporeg-results"):       # open the collapsed panels, as a user would
        page.click(f".{panel}-title")

    # --- confinement through the websocket: a name outside the data folder is refused, in the page -----------------
    page.set_state("data_selected", ["../../../etc/passwd"])
    page.click(".toporeg-data-load")
    page.until(lambda: page.state("job_error"), 20, "the refusal")
    assert "'..' is not allowed" in page.state("job_error")
    assert "not allowed" in page.find(".toporeg-error").text and page.state("images") == []
    page.click(".toporeg-error .v-alert__close button")

    # --- a logic's refusal is one line in the page too (the Uncertainty panel without an input) ---------------------
    page.click(".toporeg-unc-title")
    page.click(".toporeg-unc-apply")
    page.until(lambda: page.state("job_error"), 20, "the refusal")
    assert page.state("job_error") == "Segmentation: select an input volume" and not page.state("job_running")
    page.click(".toporeg-error .v-alert__close button")
    page.click(".toporeg-unc-title")

    # --- load the sample pair and the brain masks from the data folder ----------------------------------------------
    page.choose("toporeg-data-files", *SAMPLES)
    assert sorted(page.state("data_selected")) == sorted(SAMPLES)
    page.click(".toporeg-data-load")
    page.until(lambda: len(page.state("images") or []) == 2 and len(page.state("labels") or []) == 2, 30, "loading")
    assert [i["title"] for i in page.state("images")] == ["mni152_t1_2mm", "colin27_t1_2mm"]
    assert [i["title"] for i in page.state("labels")] == ["colin27_brainmask_2mm", "mni152_brainmask_2mm"]
    assert page.state("data_status").startswith("Loaded mni152_t1_2mm, colin27_t1_2mm")
    timings["load"] = time.monotonic() - start

    # --- register: progress in the page, and the server still answers while the run goes on -------------------------
    page.choose("toporeg-reg-fixed", "mni152_t1_2mm")
    page.choose("toporeg-reg-moving", "colin27_t1_2mm")
    page.choose("toporeg-reg-moving-mask", "colin27_brainmask_2mm")   # Colin27 has a skull, MNI152 has none
    page.choose("toporeg-reg-preset", "fast")
    t = time.monotonic()
    page.click(".toporeg-reg-apply")
    page.until(lambda: page.state("job_running"), 20, "the registration start")
    assert page.find(".toporeg-job-cancel").is_displayed() and page.find(".toporeg-job-progress").is_displayed()
    page.click(".toporeg-nz-add")            # nothing picked: the server must answer now, not after the run
    answer = page.until(lambda: page.driver.execute_script(
        "const s = window.trame.state; const e = s.get('job_error') || '';"
        "return e.startsWith('Add pair:') ? [e, s.get('job_running')] : null"), 10, "an answer during the run")
    assert answer[1], f"the answer ({answer[0]}) should come while the run goes on, not after it"
    messages = set()
    page.until(lambda: messages.add(page.state("job_message")) or not page.state("job_running"), RUN_TIMEOUT,
               "the registration")
    timings["register"] = time.monotonic() - t
    assert page.state("reg_status").startswith("Done in "), page.state("reg_status")
    assert "folding" in page.state("reg_status") and len(messages) >= 3, messages
    results = {r["title"]: r for r in page.state("results")}
    assert "colin27_t1_2mm registered" in results and any("Jacobian" in name for name in results)

    # --- a learned method with no 3D model installed: the page says why and how to get one ------------------------
    assert {"carl_2d", "dio_2d", "vxm_diff_3d_2mm"} <= set(page.state("reg_models"))
    page.choose("toporeg-reg-method", "carl")
    page.click(".toporeg-reg-apply")
    page.until(lambda: not page.state("job_running") and page.state("reg_status").startswith("Failed"), 120,
               "the refusal")
    assert "toporeg train carl" in page.state("reg_status"), page.state("reg_status")
    assert {r["title"] for r in page.state("results")} == set(results)       # nothing half-made was added
    page.choose("toporeg-reg-method", "optimize")

    # --- cancel: a heatmap at the default budget, stopped from the page --------------------------------------------
    page.choose("toporeg-reg-preset", "default")
    page.click(".toporeg-topo-apply")
    page.until(lambda: page.state("job_running"), 20, "the heatmap start")
    page.click(".toporeg-job-cancel")
    page.until(lambda: not page.state("job_running"), 120, "the cancellation")
    assert page.state("topo_status").startswith("Cancelled"), page.state("topo_status")
    assert not page.state("job_error"), "a cancelled run is not an error"
    assert page.state("topo_heatmap") is None

    # --- the heatmap: compute, show / hide, opacity; the overlay is where the heatmap is ----------------------------
    page.choose("toporeg-reg-preset", "fast")
    page.type_number("toporeg-topo-iterations", 20)
    page.until(lambda: page.state("topo_iterations") == 20, 10, "the iterations")
    _, src = page.settled_view("Red")
    t = time.monotonic()
    page.click(".toporeg-topo-apply")
    page.until(lambda: page.state("job_running"), 20, "the heatmap start")
    page.until(lambda: not page.state("job_running"), RUN_TIMEOUT, "the heatmap")
    timings["heatmap"] = time.monotonic() - t
    assert page.state("topo_status").startswith("Heatmap done in "), page.state("topo_status")
    assert page.state("topo_legend").startswith("Colour 0 / 0.25 / 0.5 / 0.75 / 1 = ")
    shown, src = page.settled_view("Red", previous=src)
    page.click(".toporeg-topo-show input")
    page.until(lambda: page.state("topo_show") is False, 10, "hiding the heatmap")
    hidden, src = page.settled_view("Red", previous=src)
    changed = _axial_changes(shown, hidden)
    head = hidden.max(axis=-1) > 30                       # the fixed image's non-background pixels
    assert changed.mean() > 0.01, f"the heatmap overlay changed only {changed.mean():.2%} of the axial view"
    assert (changed & head).sum() >= 0.9 * changed.sum(), "the overlay must lie on the image, not the background"
    warm = (shown[..., 0] - shown[..., 2])[changed].mean() - (hidden[..., 0] - hidden[..., 2])[changed].mean()
    assert warm > 10, f"the inferno overlay should make the changed pixels warmer (red - blue rose by {warm:.1f})"
    page.click(".toporeg-topo-show input")
    page.until(lambda: page.state("topo_show") is True, 10, "showing the heatmap")
    again, src = page.settled_view("Red", previous=src)
    assert _axial_changes(again, shown).mean() < 0.2 * changed.mean(), "showing it again restores the overlay"
    page.slide("toporeg-topo-opacity", 0.95)
    page.until(lambda: (page.state("topo_opacity") or 0) >= 0.85, 10, "the opacity")
    opaque, src = page.settled_view("Red", previous=src)
    stronger = _axial_changes(opaque, again)
    _save(tmp, shown=shown, hidden=hidden, again=again, opaque=opaque)
    assert stronger.mean() > 0.005 and (stronger & changed).sum() >= 0.8 * stronger.sum(), \
        (f"a higher opacity changes the pixels where the heatmap is: {stronger.mean():.2%} changed, "
         f"{(stronger & changed).sum() / max(stronger.sum(), 1):.0%} of them under the heatmap; timings {timings}")
    page.slide("toporeg-topo-threshold", 0.6)
    page.until(lambda: (page.state("topo_threshold") or 0) >= 0.5, 10, "the threshold")
    thresholded, src = page.settled_view("Red", previous=src)
    _save(tmp, thresholded=thresholded)
    covered, still = _axial_changes(opaque, hidden), _axial_changes(thresholded, hidden)
    assert still.sum() < 0.9 * covered.sum() and (still & covered).sum() >= 0.9 * still.sum(), \
        "a higher threshold hides the lower heatmap values: less of the view is covered, nothing new"
    heatmap_seen = {"changed": round(float(changed.mean()), 4), "opacity_changed": round(float(stronger.mean()), 4),
                    "covered_at_threshold_0.6": round(float(still.mean()), 4)}

    # --- the page as a user sees it: four views, the heatmap over the fixed volume ---------------------------------
    page.slide("toporeg-topo-threshold", 0.25)
    page.slide("toporeg-topo-opacity", 0.6)
    page.until(lambda: abs((page.state("topo_opacity") or 0) - 0.6) < 0.06, 10, "the screenshot's opacity")
    page.settled_view("Red", previous=src)
    page.driver.execute_script("document.querySelector('.toporeg-topo').scrollIntoView({block: 'start'})")
    update = os.environ.get("TOPOREG_UPDATE_SCREENSHOTS") == "1"
    shot = (REPO / "Resources" / "Screenshots" if update else tmp) / "web_panel.png"
    page.screenshot(shot)
    assert shot.stat().st_size > 50_000

    # --- Neuralizer: two context pairs picked in the page, run on the registered volume -----------------------------
    page.choose("toporeg-nz-target", "colin27_t1_2mm registered")
    for image, labels in (("colin27_t1_2mm", "colin27_brainmask_2mm"), ("mni152_t1_2mm", "mni152_brainmask_2mm")):
        page.choose("toporeg-nz-image", image)
        page.choose("toporeg-nz-output", labels)
        page.click(".toporeg-nz-add")
        page.until(lambda: page.state("nz_image") is None, 10, "the pair")
    assert [p["title"] for p in page.state("nz_pairs")] == ["colin27_t1_2mm \u2192 colin27_brainmask_2mm",
                                                            "mni152_t1_2mm \u2192 mni152_brainmask_2mm"]
    assert len(page.driver.find_elements("css selector", ".toporeg-nz-pair")) == 2
    page.type_number("toporeg-nz-context-size", 2)
    page.click(".toporeg-nz-align input")
    page.until(lambda: page.state("nz_align") is False and page.state("nz_context_size") == 2, 10, "the settings")
    t = time.monotonic()
    page.click(".toporeg-nz-apply")
    page.until(lambda: page.state("job_running"), 20, "the Neuralizer start")
    page.until(lambda: not page.state("job_running"), RUN_TIMEOUT, "the Neuralizer")
    timings["neuralizer"] = time.monotonic() - t
    status = page.state("nz_status")
    assert status.startswith("Neuralizer done in ") and "(segment, axial, 2 context pairs): mask " in status, status
    volume_ml = float(status.split("mask ")[1].split(" mL")[0])
    assert 800 < volume_ml < 2600, f"a brain mask of the registered head, not {volume_ml} mL"
    assert any("Neuralizer segmentation" in r["title"] for r in page.state("results"))

    # --- download a result over HTTP, as the page's link does ------------------------------------------------------
    warped = next(r for r in page.state("results") if r["title"] == "colin27_t1_2mm registered")
    with urllib.request.urlopen(server.url + warped["href"], timeout=60) as response:
        payload = response.read()
        assert 'filename="colin27_t1_2mm_registered.nii.gz"' in response.headers["Content-Disposition"]
    download = tmp / "warped.nii.gz"
    download.write_bytes(payload)
    import nibabel as nib

    image = nib.load(str(download))
    reference = nib.load(str(SAMPLE_DATA / "mni152_t1_2mm.nii.gz"))
    assert image.shape == reference.shape and np.allclose(image.affine, reference.affine, atol=1e-4)

    timings["total"] = time.monotonic() - start + server.start_seconds
    print("\nweb e2e timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) +
          f"; overlay pixels changed: {heatmap_seen}; screenshot: {shot}")
