"""Background runs: the runner with a scripted launcher (no process), then the real `toporeg` CLI subprocess
(cancel, and a one-line failure). The successful real run is driven through the widget (test_slicer_widget.py)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from toporeg_slicer_testing import blobs, oblique_affine
from toporeg.io import Volume
from TopoRegLogic import nodes
from TopoRegLogic.params import RegistrationParams
from TopoRegLogic.registration_logic import RegistrationLogic
from TopoRegLogic.runner import CliRunner, ProgressEvent, parse_progress_line

TIMEOUT = 300  # seconds; generous because the test machine is shared


def test_progress_lines_are_parsed_and_other_output_is_not():
    assert parse_progress_line('{"stage": "register", "fraction": 0.25, "message": "level 1/2"}') == \
        ProgressEvent("register", 0.25, "level 1/2")
    for line in ("", "loading", "{not json", '{"stage": "x"}', "[####----] 40%"):
        assert parse_progress_line(line) is None


class ScriptedProcess:
    """A launcher result replaying given stdout/stderr lines, then an exit code, over a few polls."""

    def __init__(self, stdout, stderr, code, polls=2):
        self.stdout, self.stderr, self.code, self.polls, self.killed = list(stdout), list(stderr), code, polls, False

    def poll(self):
        self.polls -= 1
        return self.code if self.polls < 0 else None

    def read_stdout(self):
        out, self.stdout = self.stdout[:1], self.stdout[1:]
        return out

    def read_stderr(self):
        out, self.stderr = self.stderr, []
        return out

    def kill(self):
        self.killed = True


def _runner(tmp_path, process, events=None, finished=None):
    launched = []

    def launcher(argv, env):
        launched.append((argv, env))
        return process

    runner = CliRunner(tmp_path / "work", launcher=launcher, python="python-x",
                       on_progress=(events.append if events is not None else None),
                       on_finished=(finished.append if finished is not None else None))
    return runner, launched


def test_runner_reports_progress_and_success(tmp_path):
    lines = ['{"stage": "load", "fraction": 0.0, "message": ""}', "a plain line",
             '{"stage": "done", "fraction": 1.0, "message": "wrote out"}']
    events, finished = [], []
    runner, launched = _runner(tmp_path, ScriptedProcess(lines, [], 0, polls=5), events, finished)
    runner.start(["register", "f.nii", "m.nii", "--out", "o"])
    argv, env = launched[0]
    assert argv[:3] == ["python-x", "-m", "toporeg.cli.main"]
    assert argv[-4:] == ["--progress", "json", "--cancel-file", str(runner.cancel_file)]
    import importlib.util
    from pathlib import Path

    package_root = str(Path(importlib.util.find_spec("toporeg").origin).resolve().parent.parent)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == package_root          # the child imports the same toporeg
    assert runner.wait(timeout=10, interval=0) == "succeeded" and finished == [runner]
    assert [e.stage for e in events] == ["load", "done"] and runner.last_progress.fraction == 1.0
    assert "a plain line" in runner.full_log() and runner.error == ""


def test_runner_turns_a_failure_into_one_line_and_keeps_the_log(tmp_path):
    stderr = ["Traceback (most recent call last):", '  File "x.py"', "toporeg: error: fixed.nii: image is constant"]
    runner, _ = _runner(tmp_path, ScriptedProcess([], stderr, 2))
    runner.start(["register"])
    assert runner.wait(timeout=10, interval=0) == "failed"
    assert runner.error == "fixed.nii: image is constant"
    assert "Traceback" in runner.full_log()
    runner, _ = _runner(tmp_path, ScriptedProcess([], ["Segmentation fault"], -11))
    runner.start(["register"])
    runner.wait(timeout=10, interval=0)
    assert runner.error == "Segmentation fault (exit code -11)"


def test_cancel_creates_the_cancel_file_and_ends_cancelled(tmp_path):
    process = ScriptedProcess([], ["toporeg: cancelled; no outputs were written"], 130, polls=3)
    runner, _ = _runner(tmp_path, process)
    runner.start(["register"])
    assert not runner.cancel_file.exists()
    runner.cancel()
    assert runner.cancel_file.exists()
    assert runner.wait(timeout=10, interval=0) == "cancelled" and runner.error == "cancelled by user"


def test_a_launcher_that_cannot_start_fails_cleanly(tmp_path):
    def launcher(argv, env):
        raise FileNotFoundError("no such interpreter")

    runner = CliRunner(tmp_path / "w", launcher=launcher, python="/nope/python")
    runner.start(["register"])
    assert runner.state == "failed" and "cannot start /nope/python" in runner.error and not runner.poll()


# --- the real CLI in a child process ------------------------------------------------------------------------
def _pair(scene, constant=False):
    affine = oblique_affine()
    image = blobs((16, 16, 14), seed=5)
    fixed = nodes.new_volume_node(scene, Volume(np.zeros_like(image) if constant else image, affine), "fixed")
    moving = nodes.new_volume_node(scene, Volume(np.roll(image, 1, axis=1), affine), "moving")
    return fixed, moving


def test_real_cli_cancel_leaves_no_outputs(mini_slicer, tmp_path):
    scene = mini_slicer.scene
    fixed, moving = _pair(scene)
    logic = RegistrationLogic(scene, keep_temp=True)
    events, done = [], []
    params = RegistrationParams(fixedVolume=fixed, movingVolume=moving, preset="fast", device="cpu")
    transforms_before = scene.GetNumberOfNodesByClass("vtkMRMLTransformNode")
    runner = logic.start_background(params, events.append, lambda ok, status: done.append((ok, status)),
                                    work_dir=tmp_path / "work")
    start = time.monotonic()
    while runner.poll() and not events and time.monotonic() - start < TIMEOUT:
        time.sleep(0.05)
    assert events, "no JSON progress line arrived"
    logic.cancel()
    assert runner.wait(timeout=TIMEOUT) == "cancelled"
    assert done == [(False, "Cancelled; no outputs were written.")]
    assert not (tmp_path / "work" / "out").exists()
    assert not [p for p in (tmp_path / "work").iterdir() if ".partial" in p.name]
    assert scene.GetNumberOfNodesByClass("vtkMRMLTransformNode") == transforms_before
    assert moving.GetParentTransformNode() is None and params.outputTransform is None


def test_real_cli_failure_shows_one_line_with_the_node_name(mini_slicer):
    scene = mini_slicer.scene
    fixed, moving = _pair(scene, constant=True)
    logic = RegistrationLogic(scene, temp_root=mini_slicer.temp_dir / "tmp")
    done = []
    runner = logic.start_background(RegistrationParams(fixedVolume=fixed, movingVolume=moving, preset="fast",
                                                       device="cpu"), None, lambda ok, s: done.append((ok, s)))
    assert runner.wait(timeout=TIMEOUT) == "failed"
    ok, status = done[0]
    assert not ok and "\n" not in status
    assert status.startswith("Failed: fixed 'fixed': image is constant"), status
    assert "toporeg: error:" in logic.last["log"]
    assert not list((mini_slicer.temp_dir / "tmp").iterdir())                     # temporary inputs removed


def test_bad_input_is_refused_before_any_process_starts(mini_slicer):
    started = []
    logic = RegistrationLogic(mini_slicer.scene, launcher=lambda argv, env: started.append(argv))
    fixed, _ = _pair(mini_slicer.scene)
    with pytest.raises(ValueError, match="select a fixed and a moving volume"):
        logic.start_background(RegistrationParams(fixedVolume=fixed))
    assert not started
