// The argument checks of the fused_rmsprop ops (op_checks.cpp).
#pragma once

#include "op_args.h"
#include "rmsprop_rule.h"

namespace fused_rmsprop {

// Checks the hyperparameters and every tensor of `lists`: matching list
// lengths, one device, float params (float64/32/16, bfloat16) with grads of
// the same dtype, state either of the param dtype or float32 for half-precision
// params, equal shapes, and one dense memory layout shared by a parameter,
// its gradient and its state; step counters are one-element float tensors on
// the CPU or the params' device; with stochastic rounding, bfloat16 params,
// one id per param, and step counters of one dtype on the params' device (the
// kernel reads them); with 8-bit state, uint8 codes laid out like the params
// and one contiguous float32 scale per block of each. Raises RuntimeError
// naming the first offender; every message starts with "fused_rmsprop:".
void check_rmsprop_args(const TensorLists& lists, const RMSpropOptions& opts);

}  // namespace fused_rmsprop
