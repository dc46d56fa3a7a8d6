"""The web page's panels, one module each, mirroring the Slicer module's sections: data (load from the data folder),
registration, topology heatmap, uncertainty, Neuralizer and results (downloads).

Every panel gets the same `PanelContext`: the trame server (state, controller), the `WebRuntime` (scene, views,
the module's logics), the `JobRunner` (one background run at a time) and the page-wide hooks (`refresh` after the
scene's volumes changed, `add_results` after a run made nodes worth downloading). A panel's widgets carry CSS
classes named `toporeg-<panel>-<what>` so that tests (and users' scripts) can find them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class PanelContext:
    server: Any
    runtime: Any
    jobs: Any
    refresh: Callable[[], None]
    add_results: Callable[[list], None]

    @property
    def state(self):
        return self.server.state

    @property
    def ctrl(self):
        return self.server.controller

    def node(self, key: str):
        """The scene node whose ID the state variable `key` holds (None when unset or gone)."""
        value = self.state[key]
        return self.runtime.node(value) if isinstance(value, str) else None

    def integer(self, key: str, default: int = 0) -> int:
        """State `key` as an int (a number field may hold '' or text while the user types)."""
        try:
            return int(float(self.state[key]))
        except (TypeError, ValueError):
            return default

    def choice(self, key: str, choices_key: str) -> str:
        """State `key` when it is one of the choices the page lists (`choices_key`), else ''. Why: model names
        become command-line arguments, and a path sent by a hand-crafted client must not reach the CLI."""
        value = self.state[key]
        return value if isinstance(value, str) and value in (self.state[choices_key] or []) else ""
