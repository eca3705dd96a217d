// Element conversions for the CPU kernel, written so the compiler vectorizes
// them. c10's own BFloat16 conversion branches on NaN, which keeps GCC from
// vectorizing any loop that stores bfloat16; these give the same bits for
// every value but NaN (see NOTE: [bfloat16 NaN]).
// (float16 goes through half_blocks.h instead.)
#pragma once

#include <torch/headeronly/util/BFloat16.h>

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

// NOTE: [bfloat16 NaN] Rounds to nearest even, as c10::BFloat16 does, and
// gives c10's bits for every value but NaN. c10 writes every NaN as 0x7FC0;
// here a NaN keeps its sign and the top 7 bits of its payload. That is still
// a NaN whenever one of those 7 bits is set, which holds for every value the
// CPU kernel stores: a NaN made or passed on by float arithmetic is quiet (bit
// 22 set), and a NaN loaded from bfloat16 has no other payload bits. Dropping
// c10's NaN select made 64M-element bfloat16 steps 20-25 % faster here (they
// are compute bound). tests/test_cuda_emulation.py compares every bfloat16
// bit pattern against the c10 conversions of the emulated kernel.
template <>
inline c10::BFloat16 store_as<c10::BFloat16, float>(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return c10::BFloat16(static_cast<uint16_t>(rounded), c10::BFloat16::from_bits());
}

}  // namespace fused_rmsprop::cpu
