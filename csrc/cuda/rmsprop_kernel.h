// The CUDA kernel of fused_rmsprop: each thread block updates one chunk of
// one tensor, calling the shared update rule for each element. Included by
// rmsprop_cuda.cu (nvcc) and by the host-emulation build (C++).
#pragma once

#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "../op_args.h"
#include "../opmath.h"
#include "../rmsprop_rule.h"
#include "../stochastic_rounding.h"
#include "chunk_common.h"
#include "cuda_or_emulation.h"
#include "multi_tensor_apply.h"
#include "rmsprop_quantized_chunk.h"

namespace fused_rmsprop {

template <typename Tag, int64_t kChunk>
struct RMSpropChunk : ChunkLayout<Tag> {
  using Layout = ChunkLayout<Tag>;
  using typename Layout::M;
  using typename Layout::S;
  using typename Layout::T;
  using Layout::kCen;
  using Layout::kMom;
  using Layout::kSR;
  static constexpr int kThreads = static_cast<int>(kBlockSize);
  static_assert((int64_t{1} << 32) % kChunk == 0, "a chunk must not straddle a segment");

  template <typename Meta>
  FUSED_RMSPROP_DEVICE void operator()(
      const Meta& meta, const RMSpropOptions& opts,
      const DeviceScalars& device) const {
    typename Layout::Block setup;
    if (!Layout::template open<kChunk>(meta, opts, device, setup)) {
      return;
    }
    const auto& c = setup.c;
    const int64_t start = setup.chunk.start;
    const int64_t n = setup.chunk.n;
    T* p = setup.p;
    const T* g = setup.g;
    S* v = setup.v;
    S* b = setup.b;
    S* a = setup.a;
    constexpr bool kSecond = kSecondWord<S, kMom, kCen>;

    M rp[kILP], rg[kILP], rv[kILP], rb[kILP] = {}, ra[kILP] = {};
    ElementBits bits[kILP];
    // NOTE: [fast path] When every pointer of the chunk is aligned to kILP
    // elements and the chunk is a whole number of vectors, each thread moves
    // kILP elements per tensor with one 128-bit (for fp32) load and store.
    // Otherwise (a view with an odd storage offset, or a tensor's last,
    // partial vector) every element is loaded and stored on its own, masked.
    const bool aligned = n % kILP == 0 && is_aligned(p) && is_aligned(g) &&
        is_aligned(v) && (!kMom || is_aligned(b)) && (!kCen || is_aligned(a));
    if (aligned) {
      for (int64_t i = threadIdx.x; i * kILP < n; i += blockDim.x) {
        load_vector(rp, p, i);
        load_vector(rg, g, i);
        load_vector(rv, v, i);
        if constexpr (kMom) load_vector(rb, b, i);
        if constexpr (kCen) load_vector(ra, a, i);
#pragma unroll
        for (int k = 0; k < kILP; ++k) {
          rmsprop_update<kMom, kCen>(rp[k], rg[k], rv[k], rb[k], ra[k], c);
          if constexpr (kSR) {
            bits[k] = element_bits<kSecond>(setup.keys, static_cast<uint32_t>(start + i * kILP + k));
          }
        }
        store_vector<kSR, &ElementBits::param>(p, i, rp, bits);
        store_vector<kSR, &ElementBits::square_avg>(v, i, rv, bits);
        if constexpr (kMom) store_vector<kSR, &ElementBits::momentum_buffer>(b, i, rb, bits);
        if constexpr (kCen) store_vector<kSR, &ElementBits::grad_avg>(a, i, ra, bits);
      }
      return;
    }
    for (int64_t base = 0; base < n; base += static_cast<int64_t>(blockDim.x) * kILP) {
#pragma unroll
      for (int k = 0; k < kILP; ++k) {
        const int64_t i = base + threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
        if (i < n) {
          M mb = M(0), ma = M(0);
          if constexpr (kMom) mb = static_cast<M>(b[i]);
          if constexpr (kCen) ma = static_cast<M>(a[i]);
          M mp = static_cast<M>(p[i]), mv = static_cast<M>(v[i]);
          rmsprop_update<kMom, kCen>(mp, static_cast<M>(g[i]), mv, mb, ma, c);
          ElementBits e;
          if constexpr (kSR) {
            e = element_bits<kSecond>(setup.keys, static_cast<uint32_t>(start + i));
          }
          p[i] = store_rounded<T, kSR>(mp, e.param());
          v[i] = store_rounded<S, kSR>(mv, e.square_avg());
          if constexpr (kMom) b[i] = store_rounded<S, kSR>(mb, e.momentum_buffer());
          if constexpr (kCen) a[i] = store_rounded<S, kSR>(ma, e.grad_avg());
        }
      }
    }
  }
};

template <typename Chunk, typename Meta>
FUSED_RMSPROP_GLOBAL FUSED_RMSPROP_LAUNCH_BOUNDS(kBlockSize) void rmsprop_multi_tensor_kernel(
    FUSED_RMSPROP_KERNEL_ARG(Meta) meta, RMSpropOptions opts, DeviceScalars device) {
  Chunk{}(meta, opts, device);
}

// Runs one checked call: `launch(kernel, num_blocks, threads, args...)` is
// the device's way of starting `kernel` (CUDA: <<<...>>> on the current
// stream; emulation: every block and thread in turn; threads is kBlockSize
// but for the emulated 8-bit kernel, NOTE: [warp blocks]). kArgBytes picks the
// launch layout (NOTE: [kernel argument limit]).
template <typename Tag, int64_t kChunk, int kArgBytes, typename Launch>
void run_multi_tensor(const TensorLists& lists, const RMSpropOptions& opts, const Launch& launch) {
  using Chunk = std::conditional_t<ChunkLayout<Tag>::kQuantized,
                                   RMSpropQuantizedChunk<Tag, kChunk>, RMSpropChunk<Tag, kChunk>>;
  constexpr int kDepth = Chunk::kDepth;
  std::array<TensorList, kDepth> tl;
  tl[0] = lists.params;
  tl[1] = lists.grads;
  tl[2] = lists.square_avgs;
  if constexpr (Chunk::kMom) tl[Chunk::kBuf] = lists.momentum_buffers;
  if constexpr (Chunk::kCen) tl[Chunk::kAvg] = lists.grad_avgs;
  if constexpr (Chunk::kQuantized) {
    tl[Chunk::kScales] = lists.square_avg_scales;
    if constexpr (Chunk::kMom) tl[Chunk::kBufScales] = lists.momentum_buffer_scales;
    if constexpr (Chunk::kCen) tl[Chunk::kAvgScales] = lists.grad_avg_scales;
  }
  std::vector<uint64_t> streams;  // the rounding generator's, per tensor
  if constexpr (Chunk::kSR) {
    tl[Chunk::kStep] = lists.state_steps;
    streams.reserve(lists.params.size());
    for (const int64_t id : lists.rounding_ids) {
      streams.push_back(rounding_stream(lists.rounding_seed, id));
    }
  }
  auto pointer = [](const TensorRef& t) -> const float* {
    return t.defined() ? static_cast<const float*>(t.data_ptr()) : nullptr;
  };
  // A float32 or float64 scalar: one of the two pointers is set, or none.
  auto pointers = [&](const TensorRef& t) -> std::pair<const float*, const double*> {
    if (t.defined() && dtype_of(t) == kDouble) {
      return {nullptr, static_cast<const double*>(t.data_ptr())};
    }
    return {pointer(t), nullptr};
  };
  const auto [lr32, lr64] = pointers(lists.lr_tensor);
  const auto [factor32, factor64] = pointers(lists.grad_factor);
  const bool step_is_double =
      Chunk::kSR && dtype_of(lists.state_steps[0]) == kDouble;
  const DeviceScalars device{lr32, lr64, pointer(lists.grad_scale), pointer(lists.found_inf),
      factor32, factor64, step_is_double};
  using Meta = TensorListMetadata<kDepth, kArgBytes, Chunk::kSR>;
  multi_tensor_apply<kDepth, kChunk, kArgBytes, Chunk::kSR>(
      tl, [&](const Meta& meta, int blocks) {
        launch(&rmsprop_multi_tensor_kernel<Chunk, Meta>, blocks, Chunk::kThreads, meta, opts,
               device);
      }, streams);
}

}  // namespace fused_rmsprop
