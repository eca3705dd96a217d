"""fused_rmsprop: a fused CPU/CUDA RMSprop, a drop-in for torch.optim.RMSprop."""

from ._ops import rmsprop_
from .optimizer import FusedRMSprop

__all__ = ["FusedRMSprop", "rmsprop_"]
__version__ = "0.1.0"
