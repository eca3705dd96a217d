// What the CUDA kernel's chunk functors share (rmsprop_kernel.h: full-
// precision state; rmsprop_quantized_chunk.h: 8-bit state): the address
// slots of a launch, what a block reads before its loop, vector loads and
// stores, and the scalars every block reads from device memory.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../opmath.h"
#include "../rmsprop_rule.h"
#include "../stochastic_rounding.h"
#include "cuda_or_emulation.h"
#include "multi_tensor_apply.h"

namespace fused_rmsprop {

template <typename T, int N>
struct alignas(sizeof(T) * N) AlignedVector {
  T val[N];
};

template <typename T>
FUSED_RMSPROP_DEVICE bool is_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kILP) == 0;
}

// Loads element i of each of the block's tensors into opmath registers ...
template <typename T, typename M>
FUSED_RMSPROP_DEVICE void load_vector(M (&r)[kILP], const T* base, int64_t i) {
  const auto v = reinterpret_cast<const AlignedVector<T, kILP>*>(base)[i];
#pragma unroll
  for (int k = 0; k < kILP; ++k) {
    r[k] = static_cast<M>(v.val[k]);
  }
}

// x stored as X: rounded to nearest (c10's conversion), or, with
// kStochastic and X bfloat16, stochastically with the low 16 bits of `bits`
// (NOTE: [stochastic rounding]).
template <typename X, bool kStochastic, typename M>
FUSED_RMSPROP_DEVICE X store_rounded(M x, uint32_t bits) {
  if constexpr (kStochastic) {
    return store_stochastic<X>(x, bits);
  } else {
    return static_cast<X>(x);
  }
}

// ... and stores them back (lane k rounded with (bits[k].*kSlot)(), the
// bits of this tensor's slot).
template <bool kStochastic, auto kSlot, typename T, typename M>
FUSED_RMSPROP_DEVICE void store_vector(T* base, int64_t i, const M (&r)[kILP],
                                       const ElementBits (&bits)[kILP]) {
  AlignedVector<T, kILP> v;
#pragma unroll
  for (int k = 0; k < kILP; ++k) {
    v.val[k] = store_rounded<T, kStochastic>(r[k], (bits[k].*kSlot)());
  }
  reinterpret_cast<AlignedVector<T, kILP>*>(base)[i] = v;
}

// Scalars that live in device memory and are read by every block, so the
// host never waits for them: GradScaler's scale and found_inf, and a Tensor lr.
struct DeviceScalars {
  const float* lr;      // a float32 Tensor lr, or
  const double* lr64;   // a float64 one (float64 params keep its precision)
  const float* grad_scale;
  const float* found_inf;
  const float* grad_factor;     // the clipping coefficient, float32 or
  const double* grad_factor64;  // float64
  bool step_is_double;          // stochastic rounding: the step counters' dtype
};

static_assert(sizeof(RMSpropOptions) + sizeof(DeviceScalars) <= kOtherArgBytes,
              "NOTE: [kernel argument limit]");

// NOTE: [device scalars] Each block reads found_inf, lr and the grad scale
// from device memory and folds the options into its constants itself (a few
// flops), so nothing waits on the host. False when AMP skips the step: the
// block then returns before touching memory.
template <typename M>
FUSED_RMSPROP_DEVICE bool block_constants(const RMSpropOptions& opts, const DeviceScalars& device,
                                          RMSpropConstants<M>& c) {
  if (device.found_inf != nullptr && *device.found_inf != 0.0f) {
    return false;
  }
  RMSpropOptions o = opts;
  if (device.lr != nullptr) {
    o.lr = *device.lr;
  } else if (device.lr64 != nullptr) {
    o.lr = *device.lr64;
  }
  c = RMSpropConstants<M>(o);
  if (device.grad_scale != nullptr) {
    c.grad_multiplier = inverse_grad_scale<M>(*device.grad_scale);
  }
  if (device.grad_factor != nullptr) {
    c.grad_multiplier = c.grad_multiplier * static_cast<M>(*device.grad_factor);
  } else if (device.grad_factor64 != nullptr) {
    c.grad_multiplier = c.grad_multiplier * static_cast<M>(*device.grad_factor64);
  }
  return true;
}

// The chunk this thread block updates: its tensor's slot in the launch, its
// first element and its length.
struct ChunkSpan {
  int tensor;
  int64_t start;
  int64_t n;
};

template <int64_t kChunk, typename Meta>
FUSED_RMSPROP_DEVICE ChunkSpan chunk_span(const Meta& meta) {
  const int tensor = meta.block_to_tensor[blockIdx.x];
  const int64_t start = static_cast<int64_t>(meta.block_to_chunk[blockIdx.x]) * kChunk;
  const int64_t n = meta.numel[tensor] - start;
  return {tensor, start, n < kChunk ? n : kChunk};
}

// Element `start` + i of address slot `slot` of the chunk's tensor, as X*.
template <typename X, typename Meta>
FUSED_RMSPROP_DEVICE X* chunk_data(const Meta& meta, int slot, const ChunkSpan& chunk) {
  return static_cast<X*>(const_cast<void*>(meta.addresses[slot][chunk.tensor])) + chunk.start;
}

// NOTE: [rounding generator]: the keys of the chunk's tensor at this step,
// from its step counter (address slot kStep) and its stream (its word). A
// chunk never straddles a 2^32-element segment (kChunk divides 2^32).
template <int kStep, typename Meta>
FUSED_RMSPROP_DEVICE RoundingKeys chunk_rounding_keys(const Meta& meta, const DeviceScalars& device,
                                                      const ChunkSpan& chunk) {
  const void* step = meta.addresses[kStep][chunk.tensor];
  const double value = device.step_is_double
      ? *static_cast<const double*>(step)
      : static_cast<double>(*static_cast<const float*>(step));
  return RoundingKeys(meta.word[chunk.tensor], step_counter(value),
                      static_cast<uint64_t>(chunk.start) >> 32);
}

// NOTE: [address slots] The tensors of one parameter in a launch, in this
// order: param, grad, square_avg, momentum_buffer (with momentum), grad_avg
// (centered); with 8-bit state (S = uint8_t: the three hold codes) the scales
// of each of those states; with stochastic rounding the step counter.
// Both chunk functors derive from this layout, and run_multi_tensor fills
// the slots from it.
template <typename Tag>
struct ChunkLayout {
  using T = typename Tag::T;
  using S = typename Tag::S;
  using M = opmath_t<T>;
  static constexpr bool kMom = Tag::kMomentum;
  static constexpr bool kCen = Tag::kCentered;
  static constexpr bool kSR = Tag::kStochastic;
  static constexpr bool kQuantized = std::is_same_v<S, uint8_t>;
  static constexpr int kBuf = 3;
  static constexpr int kAvg = 3 + kMom;
  static constexpr int kScales = 3 + kMom + kCen;  // 8-bit state only, as the next two
  static constexpr int kBufScales = kScales + 1;
  static constexpr int kAvgScales = kScales + 1 + kMom;
  static constexpr int kStep = kScales + (kQuantized ? 1 + kMom + kCen : 0);
  static constexpr int kDepth = kStep + kSR;

  // What a thread block reads before its loop: its constants, its chunk,
  // the chunk's tensors and (stochastic rounding) its generator's keys.
  struct Block {
    RMSpropConstants<M> c;
    ChunkSpan chunk;
    T* p;
    const T* g;
    S* v;
    S* b;  // null without momentum
    S* a;  // null when not centered
    RoundingKeys keys;
  };

  // False when AMP skips the step: the block then returns before touching memory.
  template <int64_t kChunk, typename Meta>
  FUSED_RMSPROP_DEVICE static bool open(const Meta& meta, const RMSpropOptions& opts,
                                        const DeviceScalars& device, Block& block) {
    if (!block_constants(opts, device, block.c)) {
      return false;
    }
    const ChunkSpan chunk = chunk_span<kChunk>(meta);
    block.chunk = chunk;
    block.p = chunk_data<T>(meta, 0, chunk);
    block.g = chunk_data<const T>(meta, 1, chunk);
    block.v = chunk_data<S>(meta, 2, chunk);
    block.b = kMom ? chunk_data<S>(meta, kBuf, chunk) : nullptr;
    block.a = kCen ? chunk_data<S>(meta, kAvg, chunk) : nullptr;
    if constexpr (kSR) {
      block.keys = chunk_rounding_keys<kStep>(meta, device, chunk);
    }
    return true;
  }
};

}  // namespace fused_rmsprop
