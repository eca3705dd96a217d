// The CPU kernel's loop for 8-bit state (NOTE: [8-bit state codes]): block by
// block, decode the state, run the update rule, store the parameter, and
// encode the new state with the block's new scale. A block's state waits in
// 128-element float buffers on the stack (L1) between the decoding, the
// update and the encoding, so memory is still read and written once.
//
// NOTE: [8-bit block passes] The decoding is a pass of its own rather than
// part of the update loop: with uint8 codes in that loop GCC vectorizes it 64
// elements at a time (the codes' width), runs out of vector registers and
// spills (per 64 elements 29 vector moves and 15 broadcasts of constants
// beyond the buffers' stores). With three states the separate pass was 5 %
// (AVX-512) and 11 % (AVX2) faster in cache on a 2-core Xeon, with one state
// 2 % and 9 % slower, where the fused unsigned decode hid under the divider
// (docs/performance.md, "Compute per element of 8-bit state").
#pragma once

#include <algorithm>
#include <cstdint>

#include "code_vectors.h"
#include "convert.h"
#include "isa.h"
#include "span.h"
#include "../opmath.h"
#include "../quantized_state.h"
#include "../rmsprop_rule.h"
#include "../stochastic_rounding.h"

namespace fused_rmsprop::cpu {

// Encodes x[0, m) with scale max |x| (given as bits) into codes, and stores the
// scale. Whole blocks in the AVX-512 and AVX2 copies: NOTE: [code packing].
template <bool kSigned, Isa kIsa>
C10_ALWAYS_INLINE void encode_block(uint8_t* __restrict codes, float* scale,
                                    const float* __restrict x, uint32_t max, int64_t m) {
  const float s = bits_float(max);
  const float inverse = inverse_scale(s);
  *scale = s;
  if constexpr (BlockCodes<kIsa>::kVector) {
    if (m == kQuantBlock) return BlockCodes<kIsa>::template encode<kSigned>(codes, x, inverse);
  }
  for (int64_t i = 0; i < m; ++i) {
    codes[i] = encode_code<kSigned>(x[i] * inverse);
  }
}

// Decodes codes[0, m) times `scale` into x. Whole blocks in vector registers
// in the AVX-512 and AVX2 copies (code_vectors.h).
template <bool kSigned, Isa kIsa>
C10_ALWAYS_INLINE void decode_block(float* __restrict x, const uint8_t* __restrict codes,
                                    float scale, int64_t m) {
  if constexpr (BlockCodes<kIsa>::kVector) {
    if (m == kQuantBlock) return BlockCodes<kIsa>::template decode<kSigned>(x, codes, scale);
  }
  for (int64_t i = 0; i < m; ++i) {
    x[i] = decode_code<kSigned>(codes[i]) * scale;
  }
}

// One block (m <= kQuantBlock elements) of a parameter with 8-bit state: its
// state decoded into float buffers on the stack (L1), updated there, and
// encoded back with the block's new scales.
template <typename T, bool kMomentum, bool kCentered, bool kStochastic, Isa kIsa>
C10_ALWAYS_INLINE void update_quantized_block(
    T* __restrict param, const T* __restrict grad, uint8_t* __restrict v_codes,
    uint8_t* __restrict b_codes, uint8_t* __restrict a_codes, const SpanScales& scales,
    int64_t m, const RMSpropConstants<opmath_t<T>>& c, const SpanRounding& r) {
  using M = opmath_t<T>;
  alignas(64) float v_buf[kQuantBlock];
  alignas(64) float b_buf[kQuantBlock];
  alignas(64) float a_buf[kQuantBlock];
  decode_block<false, kIsa>(v_buf, v_codes, *scales.square_avg, m);
  if constexpr (kMomentum) decode_block<true, kIsa>(b_buf, b_codes, *scales.momentum_buffer, m);
  if constexpr (kCentered) decode_block<true, kIsa>(a_buf, a_codes, *scales.grad_avg, m);
  uint32_t v_max = 0, b_max = 0, a_max = 0;
  uint32_t index = r.first;
  for (int64_t i = 0; i < m; ++i, ++index) {
    M p = load_as<M>(param[i]);
    M v = static_cast<M>(v_buf[i]);
    M b = M(0);
    M gbar = M(0);
    if constexpr (kMomentum) b = static_cast<M>(b_buf[i]);
    if constexpr (kCentered) gbar = static_cast<M>(a_buf[i]);
    rmsprop_update<kMomentum, kCentered>(p, load_as<M>(grad[i]), v, b, gbar, c);
    if constexpr (kStochastic) {
      param[i] = store_stochastic<T>(p, element_bits<false>(r.keys, index).param());
    } else {
      param[i] = store_as<T>(p);
    }
    v_buf[i] = static_cast<float>(v);
    v_max = max_bits(v_max, abs_bits(v_buf[i]));
    if constexpr (kMomentum) {
      b_buf[i] = static_cast<float>(b);
      b_max = max_bits(b_max, abs_bits(b_buf[i]));
    }
    if constexpr (kCentered) {
      a_buf[i] = static_cast<float>(gbar);
      a_max = max_bits(a_max, abs_bits(a_buf[i]));
    }
  }
  encode_block<false, kIsa>(v_codes, scales.square_avg, v_buf, v_max, m);
  if constexpr (kMomentum) {
    encode_block<true, kIsa>(b_codes, scales.momentum_buffer, b_buf, b_max, m);
  }
  if constexpr (kCentered) encode_block<true, kIsa>(a_codes, scales.grad_avg, a_buf, a_max, m);
}

// Elements [0, n) of one parameter with 8-bit state; the span starts at a
// block boundary. kIsa: the copy of the loop this is inlined into.
template <typename T, bool kMomentum, bool kCentered, bool kStochastic, Isa kIsa>
C10_ALWAYS_INLINE void update_quantized_span(
    T* __restrict param, const T* __restrict grad, uint8_t* __restrict v_codes,
    uint8_t* __restrict b_codes, uint8_t* __restrict a_codes, int64_t n,
    const RMSpropConstants<opmath_t<T>>& c, const SpanRounding& r,
    const SpanScales& scales) {
  for (int64_t i = 0, block = 0; i < n; i += kQuantBlock, ++block) {
    update_quantized_block<T, kMomentum, kCentered, kStochastic, kIsa>(
        param + i, grad + i, v_codes + i, kMomentum ? b_codes + i : nullptr,
        kCentered ? a_codes + i : nullptr, scales.at_block(block),
        std::min(kQuantBlock, n - i), c, r.at(i));
  }
}

}  // namespace fused_rmsprop::cpu
