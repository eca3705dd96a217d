// Stochastic rounding of float32 results to bfloat16, and the counter-based
// generator that drives it. Shared by the CPU kernel, the CUDA kernel and the
// host-emulation build, so all three store the same bits.
//
// NOTE: [stochastic rounding] Round to nearest drops every update smaller
// than half a bfloat16 ulp of the value it is added to (2^-9 relative).
// Stochastic rounding rounds x up to the next bfloat16 value with probability
// (x - down) / (up - down), else down, so E[round(x)] = x and small updates
// survive in expectation. In bits: add 16 uniformly random bits to the low
// half of x's float32 bits and truncate (sign-magnitude, so this is unbiased
// for either sign).
//
// NOTE: [rounding generator] The random bits of an element are a pure
// function of (seed, parameter id, step, element index), so results do not
// depend on the thread count, the launch layout or the device:
//   stream = splitmix64(splitmix64(seed) ^ id)      per parameter (host)
//   key    = splitmix64(stream ^ splitmix64(step))  per parameter and step
//   k0, k1 = low, high 32 bits of key, each xor segment * 0x9E3779B9,
//            where segment = index >> 32
//   u0     = lowbias32(uint32(index) ^ k0)  bits 31..16 round the parameter,
//                                           bits 15..0  the square_avg
//   u1     = lowbias32(uint32(index) ^ k1)  bits 31..16 the momentum_buffer,
//                                           bits 15..0  the grad_avg
// `id` is the parameter's index in the optimizer (its state_dict key) and
// `step` the parameter's step counter before this step, so a checkpoint
// carries the generator's position. lowbias32 is C. Wellons' 32-bit integer
// hash (hash-prospector); a bijection with full avalanche, and cheap enough
// to vectorize (2 multiplies, 3 shifts per element). It is a statistical
// generator, not a cryptographic one. fused_rmsprop/testing/rounding.py
// writes the same function in Python.
#pragma once

#include <torch/headeronly/macros/Macros.h>
#include <torch/headeronly/util/BFloat16.h>

#include <cstdint>
#include <type_traits>

#include "float_bits.h"

namespace fused_rmsprop {

C10_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

C10_HOST_DEVICE C10_ALWAYS_INLINE uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// The generator's stream for one parameter (computed on the host).
inline uint64_t rounding_stream(int64_t seed, int64_t id) {
  return splitmix64(splitmix64(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(id));
}

// A step counter's value as the generator's counter: the step number.
C10_HOST_DEVICE inline uint64_t step_counter(double step) {
  return step > 0.0 ? static_cast<uint64_t>(step) : 0;
}

// The keys of one parameter at one step, for elements [2^32 * segment,
// 2^32 * (segment + 1)). Kernels derive them once per span or chunk.
struct RoundingKeys {
  uint32_t k0 = 0;
  uint32_t k1 = 0;

  RoundingKeys() = default;

  C10_HOST_DEVICE RoundingKeys(uint64_t stream, uint64_t step, uint64_t segment) {
    const uint64_t key = splitmix64(stream ^ splitmix64(step));
    const uint32_t salt = static_cast<uint32_t>(segment) * 0x9E3779B9u;
    k0 = static_cast<uint32_t>(key) ^ salt;
    k1 = static_cast<uint32_t>(key >> 32) ^ salt;
  }
};

// The random bits of one element: 16 for each tensor a step stores (the
// rounding functions use the low 16 bits of what these return). The one place
// in C++ that says which bits round which tensor.
struct ElementBits {
  uint32_t u0 = 0;
  uint32_t u1 = 0;  // drawn only when bfloat16 state needs it

  C10_HOST_DEVICE uint32_t param() const { return u0 >> 16; }
  C10_HOST_DEVICE uint32_t square_avg() const { return u0; }
  C10_HOST_DEVICE uint32_t momentum_buffer() const { return u1 >> 16; }
  C10_HOST_DEVICE uint32_t grad_avg() const { return u1; }
};

// Whether a step that stores state of type S draws u1: for a bfloat16
// momentum_buffer or grad_avg.
template <typename S, bool kMomentum, bool kCentered>
constexpr bool kSecondWord = std::is_same_v<S, c10::BFloat16> && (kMomentum || kCentered);

// The bits of the element whose index has low 32 bits `index`; kSecondWord:
// also u1.
template <bool kSecondWord>
C10_HOST_DEVICE C10_ALWAYS_INLINE ElementBits element_bits(const RoundingKeys& keys,
                                                           uint32_t index) {
  ElementBits bits;
  bits.u0 = lowbias32(index ^ keys.k0);
  if constexpr (kSecondWord) {
    bits.u1 = lowbias32(index ^ keys.k1);
  }
  return bits;
}

// The bfloat16 bits of x rounded stochastically with 16 random bits r (the
// low 16 bits of `r` are used). Every NaN is stored as 0x7FC0, the quiet NaN
// c10 writes: adding r to a NaN's bits could carry its payload into the
// exponent and sign (CUDA's own NaN, 0x7FFFFFFF, would become -0.0). Values
// within one bfloat16 ulp of the largest finite one may round to infinity,
// with the probability of rounding up.
C10_HOST_DEVICE C10_ALWAYS_INLINE uint16_t bf16_bits_stochastic(float x, uint32_t r) {
  const uint32_t u = x != x ? 0x7FC00000u : float_bits(x);
  return static_cast<uint16_t>((u + (r & 0xFFFFu)) >> 16);
}

// x stored as X (NOTE: [stochastic rounding]): bfloat16 rounded
// stochastically with the low 16 bits of r; float stored exactly (the float32
// state of bfloat16 params).
template <typename X>
C10_HOST_DEVICE C10_ALWAYS_INLINE X store_stochastic(float x, uint32_t r) {
  if constexpr (std::is_same_v<X, c10::BFloat16>) {
    return X(bf16_bits_stochastic(x, r), X::from_bits());
  } else {
    static_assert(std::is_same_v<X, float>, "stochastic rounding stores bfloat16 or float");
    return x;
  }
}

}  // namespace fused_rmsprop
