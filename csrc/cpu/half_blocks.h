// float16 <-> float32 conversion of whole blocks, with F16C where the CPU
// has it (chosen at run time). Compilers do not vectorize float16
// conversions written element by element, so the CPU kernel converts a block
// of float16 values to float32, runs the float32 loop on it, and converts back.
#pragma once

#include <torch/headeronly/util/Half.h>

#include <cstdint>

namespace fused_rmsprop::cpu {

void half_to_float(const c10::Half* src, float* dst, int64_t n);
void float_to_half(const float* src, c10::Half* dst, int64_t n);

}  // namespace fused_rmsprop::cpu
