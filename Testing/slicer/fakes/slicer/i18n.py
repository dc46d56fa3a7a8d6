"""FAKE `slicer.i18n` for TopoReg's tests: `tr` and `translate` return the source text (no catalogues)."""


def tr(text):
    return text


def translate(context, text):
    return text
