"""Grid operations on volumes: resampling, canonical orientation, pad/crop, intensity normalisation, tensors."""

from .intensity import normalize_to_bounds, percentile_bounds, percentile_normalize
from .orientation import Reorientation, from_canonical, to_canonical
from .padding import PadCrop, pad_or_crop_to, pad_to_multiple, undo_pad_crop
from .resample import resample_to, resample_to_spacing
from .tensors import pad_tensor_to_multiple, tensor_to_volume, volume_to_tensor

__all__ = [
    "PadCrop", "Reorientation", "from_canonical", "pad_or_crop_to", "pad_tensor_to_multiple", "pad_to_multiple",
    "normalize_to_bounds", "percentile_bounds", "percentile_normalize",
    "resample_to", "resample_to_spacing", "tensor_to_volume", "to_canonical", "undo_pad_crop", "volume_to_tensor",
]
