#!/usr/bin/env python3
"""Draw TopoReg's 128x128 icon (brain outline, deformation grid, heat spot) with matplotlib.

Usage: python scripts/make_icon.py [--out Resources/Icons/TopoReg.png TopoReg/Resources/Icons/TopoReg.png]
"""
import argparse
import shutil

import numpy as np, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import PathPatch, Circle
from matplotlib.path import Path

S = 128
fig = plt.figure(figsize=(1, 1), dpi=S)
ax = fig.add_axes([0, 0, 1, 1]); ax.set_xlim(-1, 1); ax.set_ylim(-1, 1); ax.axis("off")
fig.patch.set_alpha(0)

# rounded square background
t = np.linspace(0, 2*np.pi, 400)
n = 5.0
bx = np.sign(np.cos(t))*np.abs(np.cos(t))**(2/n)*0.97
by = np.sign(np.sin(t))*np.abs(np.sin(t))**(2/n)*0.97
ax.fill(bx, by, color="#16324f", zorder=0)

# brain-ish outline (lateral view, frontal lobe on the left): smooth lobes + small gyral bumps
r = (0.72 + 0.06*np.cos(t) - 0.05*np.cos(2*t) + 0.03*np.sin(t)
     + 0.012*np.sin(16*t))
X = 1.08*r*np.cos(t)
Y = 0.10 + 0.80*r*np.sin(t)
# tuck the bottom in (temporal lobe / base)
Y = np.where(Y < -0.30, -0.30 + (Y+0.30)*0.55, Y)
brain = Path(np.c_[X, Y], closed=True)
ax.fill(X, Y, color="#e9eef5", zorder=1)

# deformation grid clipped to the brain
def warp(x, y):
    return (x + 0.07*np.sin(2.6*y+0.5)*np.exp(-((x-0.2)**2+(y-0.1)**2)/0.5),
            y + 0.07*np.sin(2.6*x)*np.exp(-((x-0.2)**2+(y-0.1)**2)/0.5))
patch = PathPatch(brain, transform=ax.transData, facecolor="none", edgecolor="none")
ax.add_patch(patch)
g = np.linspace(-1, 1, 200)
for v in np.linspace(-0.9, 0.9, 9):
    for xs, ys in ((np.full_like(g, v), g), (g, np.full_like(g, v))):
        wx, wy = warp(xs, ys)
        ln, = ax.plot(wx, wy, color="#5b7fa6", lw=0.9, zorder=2)
        ln.set_clip_path(patch)

# heat spot (topological change)
hx, hy = 0.28, 0.16
yy, xx = np.mgrid[-1:1:256j, -1:1:256j]
d2 = (xx-hx)**2 + (yy-hy)**2
heat = np.exp(-d2/(2*0.17**2))
rgba = plt.get_cmap("hot")(0.25 + 0.6*(1-heat))
rgba[..., 3] = np.clip(heat*1.15, 0, 1)**1.2
im = ax.imshow(rgba, extent=(-1, 1, -1, 1), origin="lower", zorder=3, interpolation="bilinear")
im.set_clip_path(patch)

# cerebellum (back, below)
ct = np.linspace(0, 2*np.pi, 100)
ax.fill(0.50+0.24*np.cos(ct), -0.40+0.15*np.sin(ct), color="#c9d3df", zorder=0.9)
ax.plot(0.50+0.24*np.cos(ct), -0.40+0.15*np.sin(ct), color="#0b1d30", lw=1.6, zorder=0.95)
# brain outline and a central sulcus-like stroke
ax.plot(np.r_[X, X[0]], np.r_[Y, Y[0]], color="#0b1d30", lw=2.2, zorder=4)
sx = np.linspace(-0.02, 0.14, 30); sy = 0.78 - 2.2*(sx+0.02) + 0.03*np.sin(30*sx)
ax.plot(sx, sy - 0.05, color="#0b1d30", lw=1.3, zorder=4, solid_capstyle="round")
lx = np.linspace(-0.45, 0.25, 30); ly = -0.08 + 0.18*(lx+0.45) + 0.03*np.sin(10*lx)
ax.plot(lx, ly - 0.08, color="#0b1d30", lw=1.3, zorder=4, solid_capstyle="round")

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--out", nargs="+", default=["Resources/Icons/TopoReg.png", "TopoReg/Resources/Icons/TopoReg.png"])
args = ap.parse_args()
fig.savefig(args.out[0], dpi=S, transparent=True)
for extra in args.out[1:]:
    shutil.copyfile(args.out[0], extra)
