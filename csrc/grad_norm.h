// fused_rmsprop::grad_norm: the norm of a list of gradients, as if they were
// one vector, in one pass over them (the read pass of gradient clipping).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

namespace fused_rmsprop {

// Checks a grad_norm call: a non-empty list of dense float tensors of one
// dtype on one device, and a norm_type > 0 (inf allowed).
void check_grad_norm_args(at::TensorList grads, double norm_type);

// The dtype of the result: float64 for float64 gradients, else float32.
at::ScalarType grad_norm_dtype(at::TensorList grads);

// The implementation for devices without a kernel of ours (CUDA): torch's
// fused multi-tensor _foreach_norm, then the norm of the per-tensor norms.
at::Tensor grad_norm_foreach(at::TensorList grads, double norm_type);

}  // namespace fused_rmsprop
