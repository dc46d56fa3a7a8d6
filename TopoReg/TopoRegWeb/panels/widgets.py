"""Small builders shared by the panels, so every panel's selects, buttons and status lines look and behave alike
(compact Vuetify 3 widgets, disabled while a background run goes on, a CSS class per widget for tests)."""

from __future__ import annotations

from contextlib import contextmanager

from trame.widgets import html
from trame.widgets import vuetify3 as v3

RUNNING = "job_running"


def select(label: str, model: str, items: str | list, css: str, *, default=None, clearable: bool = False,
           multiple: bool = False, **kwargs):
    """A compact VSelect bound to state `model`; `items` is a state name or a fixed list of choices (kept in the
    state as `<model>_choices`)."""
    choices = (items,) if isinstance(items, str) else (f"{model}_choices", list(items))
    return v3.VSelect(label=label, v_model=(model, default), items=choices,
                      classes=f"{css} mb-2", density="compact", hide_details=True, clearable=clearable,
                      multiple=multiple, chips=multiple, closable_chips=multiple, variant="outlined", **kwargs)


def button(text: str, click, css: str, *, icon: str | None = None, disabled=RUNNING, color: str = "primary",
           **kwargs):
    """A button disabled while a background run goes on (`disabled` is a state expression)."""
    return v3.VBtn(text, click=click, classes=f"{css} mr-2 mb-2", prepend_icon=icon, color=color, size="small",
                   disabled=(disabled,), **kwargs)


def slider(label: str, model: str, css: str, *, default: float, lo: float = 0.0, hi: float = 1.0,
           step: float = 0.05, **kwargs):
    """A slider bound to state `model` (each change re-renders the views on the server, which streams them)."""
    return v3.VSlider(label=label, v_model=(model, default), min=lo, max=hi, step=step, classes=f"{css} mb-1",
                      density="compact", hide_details=True, thumb_label=True, **kwargs)


def number(label: str, model: str, css: str, *, default: int, lo: int = 0, **kwargs):
    return v3.VTextField(label=label, v_model_number=(model, default), type="number", min=lo, classes=f"{css} mb-2",
                         density="compact", hide_details=True, variant="outlined", **kwargs)


def status(model: str, css: str):
    """The panel's one-line status (the last run's result line, as the desktop panel's status label)."""
    html.Div(f"{{{{ {model} }}}}", v_show=(model,), classes=f"{css} text-caption mb-2",
             style="white-space: normal; word-break: break-word;")


@contextmanager
def panel(title: str, css: str, value: str):
    """One expansion panel of the drawer; yields inside its text area."""
    with v3.VExpansionPanel(value=value, classes=css):
        v3.VExpansionPanelTitle(title, classes=f"{css}-title")
        with v3.VExpansionPanelText():
            yield
