// A span: the elements of one parameter (and its state) that one thread
// updates in one piece, and where they sit in the rounding generator and the
// 8-bit state's blocks. What the CPU kernel's functions pass down, from the
// thread's loop over tensors (rmsprop_cpu.cpp) to the element loops.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../quantized_state.h"
#include "../stochastic_rounding.h"

namespace fused_rmsprop::cpu {

constexpr int64_t kCacheLineBytes = 64;

// How the CPU loop cuts a call's work for parameters of type T and state of
// type S; the state's form decides it, once. 8-bit state (S = uint8_t codes)
// is cut in whole blocks of kQuantBlock elements, so that a block's scale is
// one thread's and one piece's; full-precision state in cache lines of the
// parameter (NOTE: [flat index space], NOTE: [software prefetch]).
template <typename T, typename S>
struct Cuts {
  static constexpr bool kQuantized = std::is_same_v<S, uint8_t>;
  // the unit of the flat index space that threads share out
  static constexpr int64_t kUnit = kQuantized ? kQuantBlock : kCacheLineBytes / sizeof(T);
  // a span is updated piece by piece, each prefetching kAhead elements ahead
  static constexpr int64_t kPiece = kQuantized ? kQuantBlock : 4 * kCacheLineBytes / sizeof(T);
  static constexpr int64_t kAhead = kQuantized ? 2 * kPiece : 4 * kPiece;  // 1 KB of float32
  // the elements per scale (1: no scales)
  static constexpr int64_t kScaleBlock = kQuantized ? kQuantBlock : 1;
};

// Where a span's elements are in their tensor's rounding generator (NOTE:
// [rounding generator]): the keys of their 2^32-element segment and the low
// 32 bits of the first element's index. Unused when rounding to nearest.
struct SpanRounding {
  RoundingKeys keys;
  uint32_t first = 0;

  SpanRounding at(int64_t offset) const {
    return {keys, first + static_cast<uint32_t>(offset)};
  }
};

// The scales of a span's first block, per state (8-bit state only).
struct SpanScales {
  float* square_avg = nullptr;
  float* momentum_buffer = nullptr;
  float* grad_avg = nullptr;

  SpanScales at_block(int64_t block) const {
    auto shift = [block](float* s) { return s == nullptr ? s : s + block; };
    return {shift(square_avg), shift(momentum_buffer), shift(grad_avg)};
  }
};

// Elements [0, n) of a parameter (T) and its state (S; uint8_t codes with
// 8-bit state). momentum_buffer and grad_avg are null when off.
template <typename T, typename S>
struct Span {
  T* param;
  const T* grad;
  S* square_avg;
  S* momentum_buffer;
  S* grad_avg;
  int64_t n;
  SpanRounding rounding;
  SpanScales scales;  // of the span's first block (8-bit state: spans start at a block)

  // Elements [i, i + m) of this span (8-bit state: i a multiple of the block size).
  Span at(int64_t i, int64_t m) const {
    auto shift = [i](S* s) { return s == nullptr ? s : s + i; };
    return {param + i, grad + i, square_avg + i, shift(momentum_buffer), shift(grad_avg), m,
            rounding.at(i), scales.at_block(i / Cuts<T, S>::kScaleBlock)};
  }
};

}  // namespace fused_rmsprop::cpu
