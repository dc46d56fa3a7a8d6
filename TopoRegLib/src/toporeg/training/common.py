"""Shared training plumbing: configs, device, time budget, LR schedule, CSV logs, Dice, convergence, reports.

torch + numpy only (matplotlib optional for the PNG curves): nothing here imports SimpleITK or nibabel.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .distributed import DistributedContext

TEMPLATE_DATA = [
    {"name": "ICBM152 2009a nonlinear symmetric T1 + GM/WM/CSF (via nilearn 0.14.1), 2 mm",
     "licence": "MNI/McGill permissive notice (use, copy, modify, distribute with notice); "
                "see Resources/SampleData/LICENSE.md"},
    {"name": "Colin27 (ch2, ch2bet) T1 + brain mask (Debian mricron-data), 2 mm; tissue labels derived by k-means",
     "licence": "as distributed in Debian mricron-data; see Resources/SampleData/LICENSE.md"},
]
SYNTH_DATA = {"name": "SynthMorph-style synthetic label maps and images (generated on the fly, no data)",
              "licence": "none needed (generated)"}


def load_config(cls, path: str | Path | None, overrides: dict[str, Any] | None = None):
    """A config dataclass from a JSON file (unknown keys refused) plus non-None overrides."""
    values: dict[str, Any] = {}
    if path:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
        values.pop("_comment", None)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)}")
    return cls(**values)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but is not available")
    return dev


def device_description(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def mix_seed(*parts: int) -> int:
    """One well-mixed seed in [0, 2**62) from integers (e.g. seed, step, sample index, process rank)."""
    state = np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(2))


def step_generator(seed: int, step: int) -> torch.Generator:
    """A stateless per-step generator (e.g. to pick the data source), so resuming needs no RNG state."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class Budget:
    """Wall-clock budget of this process (seconds, None = unlimited) with a reserve for final work."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = time.perf_counter()
        self.reserve = 3.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def exhausted(self) -> bool:
        return self.left() <= self.reserve

    def fraction(self) -> float:
        if self.seconds is None:
            return 0.0
        return min(self.elapsed() / max(self.seconds - self.reserve, 1e-6), 1.0)


def learning_rate(base: float, step: int, total: int, *, schedule: str = "constant", warmup: int = 0,
                  time_fraction: float = 0.0) -> float:
    """Linear warm-up, then constant or cosine decay to 5 % (progress = max(step/total, time_fraction))."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule '{schedule}' (constant, cosine)")
    progress = min(max(step / max(total, 1), time_fraction), 1.0)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def next_learning_rate(cfg: Any, budget: "Budget", optimizer: torch.optim.Optimizer, step: int,
                       step_seconds: float, val_seconds: float, n_val: int) -> float | None:
    """Keep time for one more step plus the final validation and saving; None when the budget is spent,
    else the scheduled learning rate, already set on the optimizer."""
    budget.reserve = 3.0 + step_seconds + max(1.5 * val_seconds, 0.5 * step_seconds * n_val)
    if budget.exhausted():
        return None
    lr = learning_rate(cfg.lr, step, cfg.steps, schedule=cfg.lr_schedule, warmup=cfg.warmup_steps,
                       time_fraction=budget.fraction() if cfg.schedule_by_time else 0.0)
    set_learning_rate(optimizer, lr)
    return lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def start_run(cfg: Any, out_dir: str | Path) -> tuple[Path, "Budget", "DistributedContext"]:
    """What every training run does first: output folder, time budget, the process (device; under torchrun its
    rank in the process group), seeds (the same in every process: identical initial weights)."""
    from .distributed import DistributedContext
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(cfg.time_budget_s)
    ctx = DistributedContext.init(cfg.device)
    seed_everything(cfg.seed)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes; GPU runs are not bitwise reproducible anyway
    return out, budget, ctx


class CsvLog:
    """Append-only CSV with a fixed header; `truncate_after(step)` drops rows a resumed run will redo."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = Path(path), fields
        if not self.path.exists():
            with self.path.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(fields)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow([_fmt(row.get(k, "")) for k in self.fields])

    def rows(self) -> list[dict[str, str]]:
        with self.path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, step: int) -> None:
        keep = [r for r in self.rows() if int(float(r["step"])) <= step]
        with self.path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(keep)


def _fmt(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = float(v)
    return f"{v:.6g}" if isinstance(v, float) else v


def dice_per_label(pred: torch.Tensor, target: torch.Tensor, labels: list[int] | None = None) -> dict[int, float]:
    """Dice of integer label maps (1, *S) per label (default: the foreground labels present in `target`)."""
    labels = labels if labels is not None else [int(v) for v in torch.unique(target) if int(v) != 0]
    out = {}
    for lab in labels:
        p, t = pred == lab, target == lab
        denom = int(p.sum()) + int(t.sum())
        if denom:
            out[lab] = 2.0 * int((p & t).sum()) / denom
    return out


def mean_dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    d = dice_per_label(pred, target)
    return float(np.mean(list(d.values()))) if d else float("nan")


def convergence(steps: list[float], losses: list[float], fraction: float = 0.1, min_points: int = 8
                ) -> dict[str, Any]:
    """Least-squares slope of the logged loss over the last `fraction` of training, and a plain statement.

    Plateau = the fitted change across that window is within ±1 % of the loss level.
    """
    steps_a, loss_a = np.asarray(steps, float), np.asarray(losses, float)
    ok = np.isfinite(loss_a)
    steps_a, loss_a = steps_a[ok], loss_a[ok]
    if len(steps_a) < min_points:
        return {"converged": False, "statement": f"not converged: too few logged points ({len(steps_a)}) to judge; "
                                                 "the run was far too short"}
    start = steps_a[-1] - fraction * (steps_a[-1] - steps_a[0])
    sel = steps_a >= start
    if sel.sum() < 3:
        sel[-3:] = True
    x, y = steps_a[sel], loss_a[sel]
    slope = float(np.polyfit(x, y, 1)[0])
    level = float(np.mean(np.abs(y))) or 1e-12
    window_change = 100.0 * slope * (x[-1] - x[0]) / level
    rel_per_1k = 100.0 * slope * 1000.0 / level
    first = float(np.mean(loss_a[: max(len(loss_a) // 10, 1)]))
    where = f"over the last {int(round(fraction * 100))} % of training (steps {int(x[0])}-{int(x[-1])})"
    if abs(window_change) < 1.0:
        statement = (f"plateaued: {where} the fitted loss changed by {window_change:+.2f} % ({rel_per_1k:+.2f} % "
                     f"per 1000 steps); from {first:.4g} in the first 10 % to {level:.4g}")
    elif window_change < 0:
        statement = (f"not converged: {where} the loss still fell by {-window_change:.2f} % "
                     f"({-rel_per_1k:.2f} % per 1000 steps; from {first:.4g} in the first 10 % to {level:.4g}); "
                     "longer training should improve it")
    else:
        statement = (f"not converged: {where} the loss rose by {window_change:.2f} % ({rel_per_1k:.2f} % per 1000 "
                     f"steps; noisy or unstable; from {first:.4g} in the first 10 % to {level:.4g})")
    return {"converged": bool(abs(window_change) < 1.0), "statement": statement, "slope_per_step": slope,
            "window_change_percent": window_change, "relative_change_percent_per_1000_steps": rel_per_1k,
            "window": [int(x[0]), int(x[-1])], "loss_first_10_percent": first, "loss_last_window": level}


def add_validation_trend(conv: dict[str, Any], val_rows: list[dict[str, str]], key: str = "dice",
                         tolerance: float = 0.005) -> dict[str, Any]:
    """Temper a loss-plateau verdict with the validation metric (higher is better) of the last two validations."""
    vals = [(int(float(r["step"])), float(r[key])) for r in val_rows if r.get(key) not in (None, "", "nan")]
    if len(vals) < 2:
        return conv
    (s0, d0), (s1, d1) = vals[-2], vals[-1]
    conv["validation_last_two"] = {"steps": [s0, s1], key: [d0, d1]}
    if d1 - d0 > tolerance:
        conv["converged"] = False
        if conv["statement"].startswith("plateaued"):
            conv["statement"] = "not converged: the training loss " + conv["statement"]
        conv["statement"] += f"; validation {key} still rose from {d0:.3f} (step {s0}) to {d1:.3f} (step {s1})"
    else:
        conv["statement"] += f"; validation {key} {d0:.3f} (step {s0}) -> {d1:.3f} (step {s1})"
    return conv


def plot_curves(train_csv: Path, png: Path, columns: list[str], val_csv: Path | None = None,
                val_columns: list[str] | None = None) -> bool:
    """Loss (and validation) curves as PNG when matplotlib is installed; returns whether it was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001 - optional dependency
        return False
    rows = CsvLog(train_csv, []).rows() if train_csv.exists() else []
    vrows = CsvLog(val_csv, []).rows() if val_csv is not None and val_csv.exists() else []
    ncols = 2 if vrows and val_columns else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    for col in columns:
        pts = [(float(r["step"]), float(r[col])) for r in rows if r.get(col) not in (None, "")]
        if pts:
            axes[0, 0].plot(*zip(*pts), label=col)
    axes[0, 0].set_xlabel("step")
    axes[0, 0].set_title("training loss")
    axes[0, 0].legend()
    if ncols == 2:
        for col in val_columns or []:
            pts = [(float(r["step"]), float(r[col])) for r in vrows if r.get(col) not in (None, "", "nan")]
            if pts:
                axes[0, 1].plot(*zip(*pts), marker="o", label=col)
        axes[0, 1].set_xlabel("step")
        axes[0, 1].set_title("validation")
        axes[0, 1].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return True


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__}
    try:
        import safetensors
        out["safetensors"] = safetensors.__version__
    except Exception:  # noqa: BLE001
        pass
    try:
        from .. import __version__
        out["toporeg"] = __version__
    except Exception:  # noqa: BLE001
        pass
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    tmp.replace(path)


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, (np.ndarray, torch.Tensor)):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return str(v)
