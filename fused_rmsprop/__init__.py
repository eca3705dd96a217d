"""fused_rmsprop: a fused CPU/CUDA RMSprop, a drop-in for torch.optim.RMSprop."""

from ._version import __version__
from ._checkpoint import torch_state_dict
from ._ops import rmsprop_
from .optimizer import FusedRMSprop

__all__ = ["FusedRMSprop", "rmsprop_", "torch_state_dict"]
