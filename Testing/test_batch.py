"""`toporeg batch`: manifest checking, a 6-job manifest on a real dask LocalCluster, resume after a kill, a corrupt
input failing alone, retries and cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from toporeg.batch import worker
from toporeg.batch.manifest import ManifestError, read_manifest
from toporeg.cli.main import main
from toporeg.io import Volume, load_volume, save_volume

pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install 'toporeg[cohort]')")

HEADER = "id,operation,fixed,moving,moving_labels,image,target,context,options\n"


def _blob(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape).astype(np.float32)
    dist2 = sum((grid[i] - centre[i]) ** 2 for i in range(len(shape)))
    return np.exp(-dist2 / (2 * radius**2)).astype(np.float32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Tiny real files: three 3D images with label maps (2 mm), three 2D images with masks, a corrupt file."""
    root = tmp_path_factory.mktemp("cohort")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-24.0, -20.0, 10.0]
    for i in range(3):
        image = _blob((24, 24, 24), (12 + i, 12, 12 - i), 5) + 0.3 * _blob((24, 24, 24), (6, 16, 12), 3)
        save_volume(Volume(image, affine), root / f"img{i}.nii.gz")
        save_volume(Volume((image > 0.3).astype(np.int16), affine), root / f"lab{i}.nii.gz")
        slice2d = _blob((48, 48), (24 + 2 * i, 24), 8) + 0.2 * _blob((48, 48), (10, 30), 4)
        save_volume(Volume(slice2d, np.eye(4)), root / f"s{i}.nii.gz")
        save_volume(Volume((slice2d > 0.4).astype(np.int16), np.eye(4)), root / f"sl{i}.nii.gz")
    (root / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08not a nifti at all")
    (root / "manifest.csv").write_text(HEADER + "\n".join([
        "a01,register,img0.nii.gz,img1.nii.gz,lab1.nii.gz,,,,--fast",
        "a02,register,img0.nii.gz,img2.nii.gz,lab2.nii.gz,,,,--fast --transform displacement",
        "a03,register,img1.nii.gz,img2.nii.gz,,,,,--fast --transform affine",
        "a04,register,img1.nii.gz,corrupt.nii.gz,,,,,--fast",
        "a05,neuralize,,,,,s0.nii.gz,s1.nii.gz:sl1.nii.gz;s2.nii.gz:sl2.nii.gz,--seed 3",
        "a06,register,img2.nii.gz,img0.nii.gz,lab0.nii.gz,,,,--fast",
    ]) + "\n")
    return root


def _batch(manifest: Path, out: Path, *extra: str) -> int:
    return main(["batch", str(manifest), "--out", str(out), "--threads", "1", "--progress", "none", *extra])


def _outputs(out: Path, job: str) -> dict[str, np.ndarray]:
    folder = out / "jobs" / job
    return {p.name: np.asarray(load_volume(p).data) for p in sorted(folder.glob("*.nii.gz"))}


@pytest.fixture(scope="module")
def full_run(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "out"
    assert _batch(cohort / "manifest.csv", out, "--workers", "2") == 1  # one job fails: exit code 1
    return out


def test_manifest_problems_are_all_reported_before_anything_runs(tmp_path, cohort):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(HEADER.replace("options", "options,colour") + "\n".join([
        f"x1,register,{cohort}/img0.nii.gz,missing.nii.gz,,,,,,red",
        f"x1,segment,{cohort}/img0.nii.gz,,,,,,,",
        f"bad id,register,{cohort}/img0.nii.gz,{cohort}/img1.nii.gz,,,,,--out elsewhere,",
        f"x4,transmogrify,,,,,,,,",
        f"x5,register,{cohort}/img0.nii.gz,{cohort}/img1.nii.gz,,,,,--fastest,",
    ]) + "\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(manifest)
    assert err.value.problems == ["header: unknown column(s) colour (known: id, operation, fixed, moving, "
                                  "moving_labels, image, target, context, controls, options)"]
    manifest.write_text(HEADER + "\n".join([
        f"x1,register,{cohort}/img0.nii.gz,missing.nii.gz,,,,,",
        f"x1,segment,,,,{cohort}/img0.nii.gz,,,",
        f"x2,segment,{cohort}/img0.nii.gz,,,{cohort}/img0.nii.gz,,,",
        f"bad id,register,{cohort}/img0.nii.gz,{cohort}/img1.nii.gz,,,,,--out elsewhere",
        "x4,transmogrify,,,,,,,",
        f"x5,register,{cohort}/img0.nii.gz,{cohort}/img1.nii.gz,,,,,--fastest",
        f"x6,neuralize,,,,,{cohort}/s0.nii.gz,{cohort}/s1.nii.gz,",
    ]) + "\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(manifest)
    problems = "\n".join(err.value.problems)
    for expected in ["row 2 (x1): input not found: missing.nii.gz", "row 3 (x1): id 'x1' already used on row",
                     "row 4 (x2): column 'fixed' does not apply to segment", "row 5 (bad id): id 'bad id' must be",
                     "row 5 (bad id): options: --out is set by the batch", "row 6 (x4): operation 'transmogrify'",
                     "row 7 (x5): options: unrecognized arguments: --fastest",
                     "row 8 (x6): context '" + f"{cohort}/s1.nii.gz' must be 'image:label'"]:
        assert expected in problems, problems
    out = tmp_path / "never"
    assert main(["batch", str(manifest), "--out", str(out)]) == 2
    assert not out.exists()


def test_six_jobs_finish_on_a_local_cluster_and_a_corrupt_input_fails_alone(full_run, cohort):
    report = json.loads((full_run / "batch_report.json").read_text())
    status = {row["id"]: row["status"] for row in report["jobs"]}
    assert status == {"a01": "done", "a02": "done", "a03": "done", "a04": "failed", "a05": "done", "a06": "done"}
    assert report["totals"]["workers"] == 2 and report["totals"]["done"] == 5
    failed = json.loads((full_run / "records" / "a04.json").read_text())
    assert "corrupt.nii.gz" in failed["error"] and failed["attempts"] == 1  # bad input: reported, not retried
    assert not (full_run / "jobs" / "a04").exists()  # a failed job leaves no partial outputs
    for job in ("a01", "a02", "a06"):
        warped = load_volume(full_run / "jobs" / job / "warped_labels.nii.gz")
        fixed = load_volume(cohort / f"img{ {'a01': 0, 'a02': 0, 'a06': 2}[job] }.nii.gz")
        assert np.allclose(warped.affine, fixed.affine) and warped.grid_shape == fixed.grid_shape
    fixed_labels = np.asarray(load_volume(cohort / "lab0.nii.gz").data) > 0
    warped = np.asarray(load_volume(full_run / "jobs" / "a01" / "warped_labels.nii.gz").data) > 0
    assert 2 * (fixed_labels & warped).sum() / (fixed_labels.sum() + warped.sum()) > 0.9
    prediction = load_volume(full_run / "jobs" / "a05" / "prediction.nii.gz")
    assert prediction.grid_shape == (48, 48)
    rows = (full_run / "summary.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("id,operation,status")
    assert "folding_percent=" in (full_run / "summary.md").read_text()


def test_a_killed_batch_resumes_skipping_finished_jobs_with_identical_results(full_run, cohort, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "toporeg.cli.main", "batch", str(cohort / "manifest.csv"), "--out", str(out),
           "--workers", "1", "--threads", "1", "--progress", "none"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "records").glob("*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the batch and its dask workers, mid-run
    proc.wait()
    finished = {p.stem: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")
                if json.loads(p.read_text())["status"] == "done"}
    assert 1 <= len(finished) < 5, "kill the batch while jobs remain"
    assert _batch(cohort / "manifest.csv", out, "--workers", "1") == 1
    report = json.loads((out / "batch_report.json").read_text())
    assert report["totals"]["skipped"] == len(finished)
    for job, mtime in finished.items():
        assert (out / "records" / f"{job}.json").stat().st_mtime_ns == mtime  # not run again
    for job in ("a01", "a02", "a03", "a05", "a06"):
        ours, reference = _outputs(out, job), _outputs(full_run, job)
        assert ours.keys() == reference.keys() and ours
        for name in ours:
            np.testing.assert_allclose(ours[name], reference[name], atol=1e-5, err_msg=f"{job}/{name}")


def test_changed_input_reruns_the_job(cohort, tmp_path):
    for name in ("s0", "s1", "sl1", "s2", "sl2"):
        (tmp_path / f"{name}.nii.gz").write_bytes((cohort / f"{name}.nii.gz").read_bytes())
    manifest = tmp_path / "m.csv"
    manifest.write_text(HEADER + "n1,neuralize,,,,,s0.nii.gz,s1.nii.gz:sl1.nii.gz;s2.nii.gz:sl2.nii.gz,\n")
    out = tmp_path / "out"
    assert _batch(manifest, out, "--scheduler", "serial") == 0
    assert _batch(manifest, out, "--scheduler", "serial") == 0
    assert json.loads((out / "batch_report.json").read_text())["totals"]["skipped"] == 1
    save_volume(Volume(np.zeros((48, 48), np.float32) + 0.5 * _blob((48, 48), (20, 20), 6), np.eye(4)),
                tmp_path / "s0.nii.gz")
    assert _batch(manifest, out, "--scheduler", "serial") == 0
    assert json.loads((out / "batch_report.json").read_text())["totals"]["skipped"] == 0


def test_unexpected_failures_are_retried_then_recorded(tmp_path, monkeypatch):
    calls = []

    def flaky(argv):
        calls.append(argv)
        return ("failed", "RuntimeError: worker hiccup", True) if len(calls) < 3 else ("done", None, False)

    monkeypatch.setattr(worker, "run_cli", flaky)
    job = {"id": "j", "operation": "register", "argv": ["register"], "checksums": {}, "out": str(tmp_path),
           "retries": 1}
    record = worker.execute_job(job)
    assert record["status"] == "failed" and record["attempts"] == 2 and "hiccup" in record["error"]
    assert json.loads((tmp_path / "records" / "j.json").read_text())["status"] == "failed"
    record = worker.execute_job({**job, "retries": 2})
    assert record["status"] == "done" and record["attempts"] == 1  # third call overall succeeds
    dependent = worker.execute_job({**job, "id": "k"}, {"id": "stats", "status": "failed", "error": "boom"})
    assert dependent["status"] == "failed" and "stats" in dependent["error"] and len(calls) == 3


def test_cancel_file_stops_the_batch_and_a_rerun_finishes_it(cohort, tmp_path):
    out, cancel = tmp_path / "out", tmp_path / "stop"
    manifest = tmp_path / "m.csv"
    rows = [f"c{i},register,{cohort}/img0.nii.gz,{cohort}/img{1 + i % 2}.nii.gz,,,,,--fast" for i in range(4)]
    manifest.write_text(HEADER + "\n".join(rows) + "\n")
    cancel.touch()
    assert _batch(manifest, out, "--scheduler", "serial", "--cancel-file", str(cancel)) == 130
    assert not list((out / "jobs").glob("*")) if (out / "jobs").exists() else True
    cancel.unlink()
    assert _batch(manifest, out, "--scheduler", "serial", "--cancel-file", str(cancel)) == 0
    assert sorted(p.name for p in (out / "jobs").iterdir()) == ["c0", "c1", "c2", "c3"]


def test_topology_rows_share_one_control_statistics_task(cohort, tmp_path):
    controls = f"{cohort}/s1.nii.gz;{cohort}/s2.nii.gz"
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,operation,fixed,moving,controls,options\n" + "\n".join(
        f"t{i},topology,{cohort}/s{i}.nii.gz,{cohort}/s{2 - i}.nii.gz,{controls},--fast --iterations 5"
        for i in range(2)) + "\n")
    out = tmp_path / "out"
    assert _batch(manifest, out, "--scheduler", "serial") == 0
    shared = sorted(p.name for p in (out / "jobs").iterdir() if p.name.startswith("_controls-"))
    assert len(shared) == 1 and (out / "jobs" / shared[0] / "mean_control_heatmap.nii.gz").is_file()
    for job in ("t0", "t1"):
        report = json.loads((out / "jobs" / job / "report.json").read_text())
        assert report["settings"]["control_stats"] == str(out / "jobs" / shared[0])
        outlier = load_volume(out / "jobs" / job / "outlier.nii.gz")
        assert outlier.grid_shape == (48, 48) and np.isfinite(np.asarray(outlier.data)).all()
    assert _batch(manifest, out, "--scheduler", "serial") == 0
    assert json.loads((out / "batch_report.json").read_text())["totals"]["skipped"] == 3


def test_local_workers_get_disjoint_gpus(monkeypatch):
    from types import SimpleNamespace

    from toporeg.batch.gpu_plugin import GpuAssignment

    seen = []
    for name in (0, 1, 2):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "unset")
        GpuAssignment(2).setup(SimpleNamespace(name=name))
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["0,1", "2,3", "4,5"]
    GpuAssignment(0).setup(SimpleNamespace(name=1))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # CPU-only workers see no GPU


def test_an_existing_scheduler_address_runs_the_jobs(cohort, tmp_path):
    from distributed import LocalCluster

    manifest = tmp_path / "m.csv"
    manifest.write_text(HEADER + f"n1,neuralize,,,,,{cohort}/s0.nii.gz,{cohort}/s1.nii.gz:{cohort}/sl1.nii.gz,\n")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert _batch(manifest, tmp_path / "out", "--scheduler", cluster.scheduler_address) == 0
    report = json.loads((tmp_path / "out" / "batch_report.json").read_text())
    assert report["totals"]["done"] == 1 and report["totals"]["workers"] == 1
    assert (tmp_path / "out" / "jobs" / "n1" / "prediction.nii.gz").is_file()


@pytest.mark.parametrize("text, parts", [
    ("/data/a.nii.gz:/data/a_seg.nii.gz", ["/data/a.nii.gz", "/data/a_seg.nii.gz"]),
    ("a.nii:b.nii", ["a.nii", "b.nii"]),
    ("C:\\x\\a.nii:D:\\b.nii", ["C:\\x\\a.nii", "D:\\b.nii"]),
    ("C:/a.nii:lab.nii", ["C:/a.nii", "lab.nii"]),
    ("only.nii", ["only.nii"]),
    ("a:b:c", ["a:b:c"]),
])
def test_context_pairs_split_on_the_one_colon_that_is_not_a_drive(text, parts):
    from toporeg.batch.manifest import split_pair

    assert split_pair(text) == parts
