// Element conversions for the CPU kernel, written so the compiler vectorizes
// them. c10's own BFloat16 conversion branches on NaN, which keeps GCC from
// vectorizing any loop that stores bfloat16; these give the same bits.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <bit>
#include <cstdint>

namespace fused_rmsprop::cpu {

template <typename M, typename T>
inline M load_as(T x) {
  return static_cast<M>(x);
}

template <>
inline float load_as<float, c10::BFloat16>(c10::BFloat16 x) {
  return std::bit_cast<float>(static_cast<uint32_t>(x.x) << 16);
}

template <typename T, typename M>
inline T store_as(M x) {
  return static_cast<T>(x);
}

template <>
inline c10::BFloat16 store_as<c10::BFloat16, float>(float x) {
  // Round to nearest even, as c10::BFloat16; NaN becomes c10's quiet NaN.
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint16_t bits = static_cast<uint16_t>(x != x ? 0x7FC0u : rounded);
  return c10::BFloat16(bits, c10::BFloat16::from_bits());
}

// IEEE half <-> float without branches (the FP16 library's algorithm, which
// c10::Half uses too), so that loops over float16 vectorize; round to nearest
// even, subnormals and infinities exact, NaN stays NaN.
template <>
inline float load_as<float, c10::Half>(c10::Half x) {
  const uint32_t w = static_cast<uint32_t>(x.x) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized =
      std::bit_cast<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized =
      std::bit_cast<float>((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t bits = two_w < (1u << 27) ? std::bit_cast<uint32_t>(denormalized)
                                           : std::bit_cast<uint32_t>(normalized);
  return std::bit_cast<float>(sign | bits);
}

template <>
inline c10::Half store_as<c10::Half, float>(float x) {
  const uint32_t w = std::bit_cast<uint32_t>(x);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  float base = (std::bit_cast<float>(w & 0x7FFFFFFFu) * 0x1.0p+112f) * 0x1.0p-110f;
  base = std::bit_cast<float>((bias >> 1) + 0x07800000u) + base;
  const uint32_t b = std::bit_cast<uint32_t>(base);
  const uint32_t nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
  const uint32_t h = (sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign);
  return c10::Half(static_cast<uint16_t>(h), c10::Half::from_bits());
}

}  // namespace fused_rmsprop::cpu
