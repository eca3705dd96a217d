// Element conversions for the CPU kernel, written so the compiler vectorizes
// them. c10's own BFloat16 conversion branches on NaN, which keeps GCC from
// vectorizing any loop that stores bfloat16; these give the same bits.
// (float16 goes through half_blocks.h instead.)
#pragma once

#include <c10/util/BFloat16.h>

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

}  // namespace fused_rmsprop::cpu
