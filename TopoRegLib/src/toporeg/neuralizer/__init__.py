"""Neuralizer (Czolbe & Dalca 2023): one few-shot multi-task model; the context set defines the task."""

from .model import Neuralizer, segment_probability

__all__ = ["Neuralizer", "segment_probability"]
