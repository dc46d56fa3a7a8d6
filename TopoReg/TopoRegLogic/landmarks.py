"""Target registration error (TRE) from paired markups fiducials.

Point n of the fixed markups node corresponds to point n of the moving one. After registration each fixed
point p is mapped to the moving space by the result, phi(p) = p + u(p) (the output transform's FromParent,
interpolated linearly on the fixed grid), and compared with its moving partner q: TRE_n = |phi(p_n) - q_n|.
Before registration: |p_n - q_n|. Positions are the nodes' own (local) coordinates, so putting the moving
markups under the output transform for display does not change the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import nodes


@dataclass
class LandmarkError:
    before_mm: np.ndarray  # (N,)
    after_mm: np.ndarray   # (N,)

    @property
    def mean_before(self) -> float:
        return float(np.mean(self.before_mm))

    @property
    def mean_after(self) -> float:
        return float(np.mean(self.after_mm))

    def describe(self) -> str:
        return f"TRE {self.mean_after:.2f} mm (before {self.mean_before:.2f} mm, {self.before_mm.size} landmarks)"


def control_points(markups_node) -> np.ndarray:
    """(N, 3) local RAS positions of a markups node's control points."""
    count = markups_node.GetNumberOfControlPoints()
    points = np.zeros((count, 3))
    for index in range(count):
        markups_node.GetNthControlPointPosition(index, points[index])
    return points


def paired_points(fixed_markups, moving_markups) -> tuple[np.ndarray, np.ndarray]:
    fixed, moving = control_points(fixed_markups), control_points(moving_markups)
    if len(fixed) == 0:
        raise nodes.input_error(f"landmarks '{fixed_markups.GetName()}' have no points")
    if len(fixed) != len(moving):
        raise nodes.input_error(f"landmark counts differ: '{fixed_markups.GetName()}' has {len(fixed)}, "
                                f"'{moving_markups.GetName()}' has {len(moving)} (points are paired by order)")
    return fixed, moving


def target_registration_error(fixed_points: np.ndarray, moving_points: np.ndarray, mapping) -> LandmarkError:
    """`mapping((N, 3) fixed points) -> (N, 3) moving points`, e.g. `transform_nodes.map_points(..., node)`."""
    fixed_points, moving_points = np.asarray(fixed_points, float), np.asarray(moving_points, float)
    mapped = np.asarray(mapping(fixed_points), float)
    return LandmarkError(before_mm=np.linalg.norm(fixed_points - moving_points, axis=1),
                         after_mm=np.linalg.norm(mapped - moving_points, axis=1))
