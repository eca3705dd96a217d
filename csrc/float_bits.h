// A float32's bits and back, the same on the host and in CUDA device code.
#pragma once

#include <torch/headeronly/macros/Macros.h>

#include <cstdint>
#include <cstring>

namespace fused_rmsprop {

C10_HOST_DEVICE C10_ALWAYS_INLINE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

C10_HOST_DEVICE C10_ALWAYS_INLINE float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

}  // namespace fused_rmsprop
