"""`toporeg models`: the bundled and user models, one line each (or JSON)."""

from __future__ import annotations

import argparse
import json

from ..models.catalogue import list_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list bundled and user models (name, task, input spacing, card summary)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    models = list_models()
    if args.json:
        print(json.dumps(models, indent=2, default=str))
        return 0
    if not models:
        print("no models found (bundled: Resources/Models; user: $TOPOREG_MODELS or ~/.cache/toporeg/models)")
        return 0
    for m in models:
        if "error" in m:
            print(f"{m['name']:<22} [{m['source']}] unreadable card: {m['error']}")
            continue
        spacing = "x".join(f"{s:g}" for s in (m.get("spacing_mm") or [])) or "?"
        val = ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.3f}"
                        for k, v in (m.get("validation") or {}).items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool))[:80]
        print(f"{m['name']:<22} [{m['source']}] {m.get('task')}, {m.get('ndim')}D, {spacing} mm; {val}")
        if m.get("converged"):
            print(f"{'':<22} {str(m['converged'])[:110]}")
    return 0
