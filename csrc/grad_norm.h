// fused_rmsprop::grad_norm: the norm of a list of gradients, as if they were
// one vector, in one pass over them (the read pass of gradient clipping).
#pragma once

#include "torch_api.h"

namespace fused_rmsprop {

// Checks a grad_norm call: a non-empty list of dense float tensors of one
// dtype on one device, and a norm_type > 0 (inf allowed).
void check_grad_norm_args(TensorList grads, double norm_type);

// The dtype of the result: float64 for float64 gradients, else float32.
ScalarType grad_norm_dtype(TensorList grads);

}  // namespace fused_rmsprop
