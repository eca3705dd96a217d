// The CPU kernel's loop for 8-bit state (NOTE: [8-bit state codes]): block by
// block, decode the state, run the update rule, store the parameter, and
// encode the new state with the block's new scale. The new state of a block
// waits in a 128-element buffer on the stack (L1) between the update and the
// encoding, so memory is still read and written once.
#pragma once

#include <algorithm>
#include <cstdint>

#include "convert.h"
#include "span.h"
#include "../opmath.h"
#include "../quantized_state.h"
#include "../rmsprop_rule.h"
#include "../stochastic_rounding.h"

namespace fused_rmsprop::cpu {

// Encodes x[0, m) with scale max |x| (given as bits) into codes, and stores the scale.
template <bool kSigned>
C10_ALWAYS_INLINE void encode_block(uint8_t* __restrict codes, float* scale,
                                    const float* __restrict x, uint32_t max, int64_t m) {
  const float s = bits_float(max);
  const float inverse = inverse_scale(s);
  *scale = s;
  for (int64_t i = 0; i < m; ++i) {
    codes[i] = encode_code<kSigned>(x[i] * inverse);
  }
}

// One block (m <= kQuantBlock elements) of a parameter with 8-bit state.
template <typename T, bool kMomentum, bool kCentered, bool kStochastic>
C10_ALWAYS_INLINE void update_quantized_block(
    T* __restrict param, const T* __restrict grad, uint8_t* __restrict v_codes,
    uint8_t* __restrict b_codes, uint8_t* __restrict a_codes, const SpanScales& scales,
    int64_t m, const RMSpropConstants<opmath_t<T>>& c, const SpanRounding& r) {
  using M = opmath_t<T>;
  alignas(64) float v_new[kQuantBlock];
  alignas(64) float b_new[kQuantBlock];
  alignas(64) float a_new[kQuantBlock];
  const float v_scale = *scales.square_avg;
  const float b_scale = kMomentum ? *scales.momentum_buffer : 0.0f;
  const float a_scale = kCentered ? *scales.grad_avg : 0.0f;
  uint32_t v_max = 0, b_max = 0, a_max = 0;
  uint32_t index = r.first;
  for (int64_t i = 0; i < m; ++i, ++index) {
    M p = load_as<M>(param[i]);
    M v = static_cast<M>(decode_code<false>(v_codes[i]) * v_scale);
    M b = M(0);
    M gbar = M(0);
    if constexpr (kMomentum) b = static_cast<M>(decode_code<true>(b_codes[i]) * b_scale);
    if constexpr (kCentered) gbar = static_cast<M>(decode_code<true>(a_codes[i]) * a_scale);
    rmsprop_update<kMomentum, kCentered>(p, load_as<M>(grad[i]), v, b, gbar, c);
    if constexpr (kStochastic) {
      param[i] = store_stochastic<T>(p, element_bits<false>(r.keys, index).param());
    } else {
      param[i] = store_as<T>(p);
    }
    v_new[i] = static_cast<float>(v);
    v_max = max_bits(v_max, abs_bits(v_new[i]));
    if constexpr (kMomentum) {
      b_new[i] = static_cast<float>(b);
      b_max = max_bits(b_max, abs_bits(b_new[i]));
    }
    if constexpr (kCentered) {
      a_new[i] = static_cast<float>(gbar);
      a_max = max_bits(a_max, abs_bits(a_new[i]));
    }
  }
  encode_block<false>(v_codes, scales.square_avg, v_new, v_max, m);
  if constexpr (kMomentum) encode_block<true>(b_codes, scales.momentum_buffer, b_new, b_max, m);
  if constexpr (kCentered) encode_block<true>(a_codes, scales.grad_avg, a_new, a_max, m);
}

// Elements [0, n) of one parameter with 8-bit state; the span starts at a
// block boundary.
template <typename T, bool kMomentum, bool kCentered, bool kStochastic>
C10_ALWAYS_INLINE void update_quantized_span(
    T* __restrict param, const T* __restrict grad, uint8_t* __restrict v_codes,
    uint8_t* __restrict b_codes, uint8_t* __restrict a_codes, int64_t n,
    const RMSpropConstants<opmath_t<T>>& c, const SpanRounding& r,
    const SpanScales& scales) {
  for (int64_t i = 0, block = 0; i < n; i += kQuantBlock, ++block) {
    update_quantized_block<T, kMomentum, kCentered, kStochastic>(
        param + i, grad + i, v_codes + i, kMomentum ? b_codes + i : nullptr,
        kCentered ? a_codes + i : nullptr, scales.at_block(block),
        std::min(kQuantBlock, n - i), c, r.at(i));
  }
}

}  // namespace fused_rmsprop::cpu
