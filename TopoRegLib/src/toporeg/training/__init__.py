"""Training learned models without downloads: synthetic (SynthMorph-style) and augmented-template data,
VoxelMorph-diff and DeepSim trainers, configs, and the template cache. torch/numpy/safetensors only.

Entry points: `python -m toporeg.training.train_registration`, `python -m toporeg.training.train_deepsim`,
`python -m toporeg.training.dataset_cache`; `scripts/train_on_gpu.sh` runs the shipped configs in `configs/`.
Every trainer also runs under torchrun with DistributedDataParallel (`distributed.py`, `sharding.py`;
docs/training.md).
"""
