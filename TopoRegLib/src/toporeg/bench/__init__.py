"""Registration benchmark (`toporeg bench registration`): cases with known answers, peer methods, shared metrics.

Optional dependencies (the `bench` extra): antspyx, itk-elastix, nilearn, nitransforms, pydeface, psutil,
matplotlib, scipy. Import the submodules directly; nothing heavy is imported here.
"""
