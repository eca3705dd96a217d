// 8-bit block-wise quantized optimizer state: the codes, written once for the
// CPU kernel, the CUDA kernel and its host-emulation build, so all three
// store the same bytes.
//
// NOTE: [8-bit state codes] A quantized state tensor is a uint8 code per
// element plus one float32 scale per block of kQuantBlock consecutive
// elements (in memory order; a tensor's last block may be partial). The
// scale is the block's largest |x|, and each code stores y = x / scale:
//   square_avg (never negative): unsigned log-linear code. Code 0 is 0; code
//     c >= 1 is the float32 with bits kUnsignedBase + (c << 20): 32 binades
//     (down to 2.9e-10 of the scale), 8 codes per binade, 255 exactly 1.
//   momentum_buffer, grad_avg: sign bit (bit 7) and a 7-bit magnitude code of
//     the same kind: 16 binades (down to 1.9e-5), 127 exactly 1.
// Within a binade the codes are evenly spaced (the float's mantissa is
// linear), so encoding is integer arithmetic on the float's bits:
// (bits(|y|) - base + 2^19) >> 20, clamped, rounds to the nearer code
// (relative error <= 1/16). The square_avg range is wide because an element
// whose square_avg is rounded to 0 would take steps of up to lr / sqrt(1 -
// alpha) (10 lr at alpha 0.99) on its next gradient; 32 binades keep every
// gradient within 2^16 of its block's largest one. The element with the
// block's largest |x| is stored exactly (code 1.0 times its scale).
// fused_rmsprop/_quantized.py writes the same codes in PyTorch.
#pragma once

#include <torch/headeronly/macros/Macros.h>

#include <cstdint>

#include "float_bits.h"

namespace fused_rmsprop {

constexpr int64_t kQuantBlock = 128;  // elements per scale (CUDA: one warp x kILP)
constexpr int kCodeShift = 20;        // 23 mantissa bits - 3 kept
constexpr int32_t kUnsignedBase = 0x3F800000 - (255 << kCodeShift);
constexpr int32_t kSignedBase = 0x3F800000 - (127 << kCodeShift);
constexpr int32_t kRoundToNearest = 1 << (kCodeShift - 1);

// |x| as bits: comparing these as integers orders non-negative floats (a NaN
// is larger than every number), so a block's scale is an integer max, which
// compilers vectorize without -ffast-math.
C10_HOST_DEVICE C10_ALWAYS_INLINE uint32_t abs_bits(float x) {
  return float_bits(x) & 0x7FFFFFFFu;
}

C10_HOST_DEVICE C10_ALWAYS_INLINE uint32_t max_bits(uint32_t a, uint32_t b) {
  return a > b ? a : b;
}

// 1 / scale, or 0 for an all-zero block (whose codes are then all 0).
C10_HOST_DEVICE C10_ALWAYS_INLINE float inverse_scale(float scale) {
  return scale > 0.0f ? 1.0f / scale : 0.0f;
}

// The value of a code, in units of its block's scale.
template <bool kSigned>
C10_HOST_DEVICE C10_ALWAYS_INLINE float decode_code(uint8_t code) {
  const int32_t c = code;
  const int32_t magnitude = kSigned ? (c & 0x7F) : c;
  const int32_t base = kSigned ? kSignedBase : kUnsignedBase;
  uint32_t bits = magnitude == 0 ? 0u : static_cast<uint32_t>(base + (magnitude << kCodeShift));
  if constexpr (kSigned) {
    bits |= static_cast<uint32_t>(c >> 7) << 31;
  }
  return bits_float(bits);
}

// The code of y = x / scale (|y| <= 1 up to rounding of the division).
template <bool kSigned>
C10_HOST_DEVICE C10_ALWAYS_INLINE uint8_t encode_code(float y) {
  const uint32_t u = float_bits(y);
  const int32_t base = kSigned ? kSignedBase : kUnsignedBase;
  const int32_t top = kSigned ? 127 : 255;
  int32_t magnitude =
      (static_cast<int32_t>(u & 0x7FFFFFFFu) - base + kRoundToNearest) >> kCodeShift;
  magnitude = magnitude < 0 ? 0 : magnitude;
  magnitude = magnitude > top ? top : magnitude;
  if constexpr (kSigned) {
    magnitude |= static_cast<int32_t>(u >> 31) << 7;
  }
  return static_cast<uint8_t>(magnitude);
}

}  // namespace fused_rmsprop
