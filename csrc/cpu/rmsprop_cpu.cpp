// The CPU kernel: one pass over every parameter of a call, vectorized by the
// compiler for the CPU found at run time, split over threads with torch's
// parallel_for across all tensors of the call.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "convert.h"
#include "half_blocks.h"
#include "isa.h"
#include "quantized_span.h"
#include "span.h"
#include "../dispatch.h"
#include "../op_entry.h"
#include "../opmath.h"
#include "../rmsprop_rule.h"
#include "../stochastic_rounding.h"

namespace fused_rmsprop {
namespace {

// Each call's element loop runs with the best ISA this CPU has (see NOTE:
// [run-time ISA choice] in isa.h), in the copy compiled for it.

using cpu::Cuts;
using cpu::kCacheLineBytes;
using cpu::Span;
using cpu::SpanRounding;
using cpu::SpanScales;

// Updates elements [0, n) of one parameter and its state, in place. Inlined
// into each ISA's copy of the loop (update_span_v4, _v3, _baseline).
// kStochastic: bfloat16 stores round stochastically (T is bfloat16).
template <typename T, typename S, bool kMomentum, bool kCentered, bool kStochastic>
C10_ALWAYS_INLINE void update_elements(
    T* __restrict param,
    const T* __restrict grad,
    S* __restrict square_avg,
    S* __restrict momentum_buffer,
    S* __restrict grad_avg,
    int64_t n,
    const RMSpropConstants<opmath_t<T>>& c,
    const SpanRounding& r) {
  using M = opmath_t<T>;
  using cpu::load_as;
  using cpu::store_as;
  // The generator's index runs as its own 32-bit counter, which keeps the
  // vectorized loop in 32-bit lanes (from i it computes 64-bit ones).
  uint32_t index = r.first;
  for (int64_t i = 0; i < n; ++i, ++index) {
    M p = load_as<M>(param[i]);
    M v = load_as<M>(square_avg[i]);
    M b = M(0);
    M gbar = M(0);
    if constexpr (kMomentum) {
      b = load_as<M>(momentum_buffer[i]);
    }
    if constexpr (kCentered) {
      gbar = load_as<M>(grad_avg[i]);
    }
    rmsprop_update<kMomentum, kCentered>(p, load_as<M>(grad[i]), v, b, gbar, c);
    if constexpr (kStochastic) {
      const ElementBits bits = element_bits<kSecondWord<S, kMomentum, kCentered>>(r.keys, index);
      param[i] = store_stochastic<T>(p, bits.param());
      square_avg[i] = store_stochastic<S>(v, bits.square_avg());
      if constexpr (kMomentum) momentum_buffer[i] = store_stochastic<S>(b, bits.momentum_buffer());
      if constexpr (kCentered) grad_avg[i] = store_stochastic<S>(gbar, bits.grad_avg());
    } else {
      param[i] = store_as<T>(p);
      square_avg[i] = store_as<S>(v);
      if constexpr (kMomentum) momentum_buffer[i] = store_as<S>(b);
      if constexpr (kCentered) grad_avg[i] = store_as<S>(gbar);
    }
  }
}

// Asks for the cache lines of elements [i, i + n) of x, to be read
// (kWrite = 0) or written (1).
template <int kWrite, typename X>
C10_ALWAYS_INLINE void prefetch(const X* x, int64_t i, int64_t n) {
  constexpr int64_t kLine = kCacheLineBytes / sizeof(X);
  for (int64_t k = 0; k < n; k += kLine) {
    __builtin_prefetch(x + i + k, kWrite);
  }
}

// A piece of a span (with 8-bit state, whole blocks but for the span's
// last one; quantized_span.h), by the element loop of its state's form.
// kIsa: the copy of the loop this is inlined into.
template <bool kMomentum, bool kCentered, bool kStochastic, cpu::Isa kIsa, typename T, typename S>
C10_ALWAYS_INLINE void update_piece(const Span<T, S>& s,
                                    const RMSpropConstants<opmath_t<T>>& c) {
  if constexpr (Cuts<T, S>::kQuantized) {
    cpu::update_quantized_span<T, kMomentum, kCentered, kStochastic, kIsa>(
        s.param, s.grad, s.square_avg, s.momentum_buffer, s.grad_avg, s.n, c, s.rounding,
        s.scales);
  } else {
    update_elements<T, S, kMomentum, kCentered, kStochastic>(
        s.param, s.grad, s.square_avg, s.momentum_buffer, s.grad_avg, s.n, c, s.rounding);
  }
}

// NOTE: [software prefetch] A step streams 5 to 9 arrays at once. The
// span is updated in blocks of 4 cache lines of the parameter, and each block
// first asks for the lines of every tensor 4 blocks (1 KB of float32
// parameter) ahead. Measured on the 2-core Zen 3 VM, paired A/B in one
// process: 64M float32 plain 7-15 % faster (blocking alone: 4 %), with
// momentum + centered 4-7 %, 200 x 50K 2-4 %, 64M bfloat16 3 %; 2, 8 and 16
// blocks ahead were no better. Cached data (1e5 elements) is unaffected.
// (Our guess at the cause, not measured: the hardware prefetcher alone keeps
// fewer lines of so many streams in flight.)
// kPrefetch is false for blocks that are already in L1 (the float16 path).
template <bool kMomentum, bool kCentered, bool kStochastic, bool kPrefetch, cpu::Isa kIsa,
          typename T, typename S>
C10_ALWAYS_INLINE void update_span_body(const Span<T, S> s,
                                        const RMSpropConstants<opmath_t<T>> c) {
  constexpr int64_t kBlock = Cuts<T, S>::kPiece;
  constexpr int64_t kAhead = Cuts<T, S>::kAhead;
  const int64_t n = s.n;
  int64_t i = 0;
  for (; kPrefetch && i + kBlock <= n; i += kBlock) {
    if (i + kAhead + kBlock <= n) {
      prefetch<1>(s.param, i + kAhead, kBlock);
      prefetch<0>(s.grad, i + kAhead, kBlock);
      prefetch<1>(s.square_avg, i + kAhead, kBlock);
      if constexpr (kMomentum) prefetch<1>(s.momentum_buffer, i + kAhead, kBlock);
      if constexpr (kCentered) prefetch<1>(s.grad_avg, i + kAhead, kBlock);
    }
    update_piece<kMomentum, kCentered, kStochastic, kIsa>(s.at(i, kBlock), c);
  }
  update_piece<kMomentum, kCentered, kStochastic, kIsa>(s.at(i, n - i), c);
}

// The copies of the loop per ISA; each inlines update_span_body and
// everything it calls, compiled for its target (and told it, for the
// intrinsics of code_vectors.h).
#define FUSED_RMSPROP_SPAN_COPY(NAME, ISA, ATTRIBUTES)                                     \
  template <bool kMomentum, bool kCentered, bool kStochastic, bool kPrefetch, typename T,  \
            typename S>                                                                    \
  ATTRIBUTES void NAME(const Span<T, S> s, const RMSpropConstants<opmath_t<T>> c) { \
    update_span_body<kMomentum, kCentered, kStochastic, kPrefetch, ISA>(s, c);             \
  }
FUSED_RMSPROP_SPAN_COPY(update_span_baseline, cpu::Isa::kBaseline, __attribute__((noinline)))
#ifdef FUSED_RMSPROP_X86_ISAS
FUSED_RMSPROP_SPAN_COPY(update_span_v3, cpu::Isa::kX86_64_V3,
                        FUSED_RMSPROP_TARGET_V3 __attribute__((noinline)))
FUSED_RMSPROP_SPAN_COPY(update_span_v4, cpu::Isa::kX86_64_V4,
                        FUSED_RMSPROP_TARGET_V4 __attribute__((noinline)))
#endif
#undef FUSED_RMSPROP_SPAN_COPY

// Runs the copy of the loop for the active ISA.
template <bool kMomentum, bool kCentered, bool kStochastic, bool kPrefetch = true, typename T,
          typename S>
void update_span(const Span<T, S>& s, const RMSpropConstants<opmath_t<T>>& c) {
#ifdef FUSED_RMSPROP_X86_ISAS
  switch (cpu::active_isa()) {
    case cpu::Isa::kX86_64_V4:
      return update_span_v4<kMomentum, kCentered, kStochastic, kPrefetch>(s, c);
    case cpu::Isa::kX86_64_V3:
      return update_span_v3<kMomentum, kCentered, kStochastic, kPrefetch>(s, c);
    case cpu::Isa::kBaseline:
      break;
  }
#endif
  update_span_baseline<kMomentum, kCentered, kStochastic, kPrefetch>(s, c);
}

// float16 params: block by block, convert to float32 (F16C), run the float32
// loop above on the block, convert back. The rounding is the same as
// converting each element on its own: float32 compute, one rounding to
// float16 per stored value. float32 state (S = float) is used in place.
template <bool kMomentum, bool kCentered, typename S>
void update_span_half(const Span<c10::Half, S>& s, const RMSpropConstants<float>& c) {
  constexpr int64_t kBlock = 512;
  alignas(64) float p[kBlock], g[kBlock], v[kBlock], b[kBlock], a[kBlock];
  constexpr bool kHalfState = std::is_same_v<S, c10::Half>;
  for (int64_t i0 = 0; i0 < s.n; i0 += kBlock) {
    const int64_t m = std::min(kBlock, s.n - i0);
    auto load_state = [&](S* src, float* block) -> float* {
      if constexpr (kHalfState) {
        cpu::half_to_float(src + i0, block, m);
        return block;
      } else {
        return src + i0;
      }
    };
    auto store_state = [&](S* dst, const float* block) {
      if constexpr (kHalfState) {
        cpu::float_to_half(block, dst + i0, m);
      }
    };
    cpu::half_to_float(s.param + i0, p, m);
    cpu::half_to_float(s.grad + i0, g, m);
    const Span<float, float> block{p, g, load_state(s.square_avg, v),
        kMomentum ? load_state(s.momentum_buffer, b) : nullptr,
        kCentered ? load_state(s.grad_avg, a) : nullptr, m, {}, {}};
    update_span<kMomentum, kCentered, false, false>(block, c);
    cpu::float_to_half(p, s.param + i0, m);
    store_state(s.square_avg, v);
    if constexpr (kMomentum) store_state(s.momentum_buffer, b);
    if constexpr (kCentered) store_state(s.grad_avg, a);
  }
}

template <bool kMomentum, bool kCentered, bool kStochastic, typename T, typename S>
void update_param(const Span<T, S>& s, const RMSpropConstants<opmath_t<T>>& c) {
  if constexpr (std::is_same_v<T, c10::Half> && !Cuts<T, S>::kQuantized) {
    update_span_half<kMomentum, kCentered>(s, c);
  } else {
    update_span<kMomentum, kCentered, kStochastic>(s, c);
  }
}

// NOTE: [flat index space] The work of a call is one index space of units
// laid end to end over all its tensors; a unit is the elements of one 64-byte
// cache line of the parameter, counted from the tensor's start. The units are
// split evenly over the threads, so two threads share 200 small tensors as
// well as one large one, and no two threads write to one cache line of a
// parameter (with 8-bit state: one block of kQuantBlock elements, so that
// each block's scale is computed by one thread). A tensor's last unit may be
// partial; zero-size tensors own no units.
// Below this many elements a call runs on one thread: waking the pool costs
// more than the update.
constexpr int64_t kMinElementsPerThread = 32768;

template <typename Tag>
void run_cpu(const TensorLists& lists, const RMSpropOptions& opts) {
  using T = typename Tag::T;
  using S = typename Tag::S;
  using M = opmath_t<T>;
  constexpr bool kQuantized = Cuts<T, S>::kQuantized;
  constexpr int64_t kUnit = Cuts<T, S>::kUnit;

  const int64_t n = static_cast<int64_t>(lists.params.size());
  std::vector<int64_t> unit_start(n + 1, 0);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t units = (lists.params[t].numel() + kUnit - 1) / kUnit;
    unit_start[t + 1] = unit_start[t] + units;
  }
  auto data = [](const TensorRef& t) { return t.data_ptr(); };
  auto state_ptr = [&](TensorList list, int64_t t) -> S* {
    return list.empty() ? nullptr : static_cast<S*>(data(list[t]));
  };
  auto scales_ptr = [&](TensorList list, int64_t t) -> float* {
    return list.empty() ? nullptr : static_cast<float*>(data(list[t]));
  };
  RMSpropOptions o = opts;
  if (lists.lr_tensor.defined()) {
    o.lr = read_host_scalar(lists.lr_tensor);  // a CPU tensor: no synchronisation
  }
  RMSpropConstants<M> c(o);
  // NOTE: [rounding generator]: each tensor's key at this step.
  std::vector<std::pair<uint64_t, uint64_t>> rounding;  // (stream, step)
  if constexpr (Tag::kStochastic) {
    rounding.resize(n);
    for (int64_t t = 0; t < n; ++t) {
      rounding[t] = {rounding_stream(lists.rounding_seed, lists.rounding_ids[t]),
                     step_counter(read_host_scalar(lists.state_steps[t]))};
    }
  }
  if (lists.grad_scale.defined()) {
    c.grad_multiplier = inverse_grad_scale<M>(static_cast<float>(read_host_scalar(lists.grad_scale)));
  }
  if (lists.grad_factor.defined()) {  // a CPU tensor: no synchronisation
    c.grad_multiplier = c.grad_multiplier * static_cast<M>(read_host_scalar(lists.grad_factor));
  }

  torch::stable::parallel_for(
      0, unit_start[n], kMinElementsPerThread / kUnit,
      [&](int64_t begin, int64_t end) {
        int64_t t = std::upper_bound(unit_start.begin(), unit_start.end(), begin) -
            unit_start.begin() - 1;
        for (; t < n && unit_start[t] < end; ++t) {
          const int64_t numel = lists.params[t].numel();
          const int64_t first =
              (std::max(begin, unit_start[t]) - unit_start[t]) * kUnit;
          const int64_t last = std::min(
              (std::min(end, unit_start[t + 1]) - unit_start[t]) * kUnit, numel);
          if (last <= first) {
            continue;
          }
          Span<T, S> span{static_cast<T*>(data(lists.params[t])),
              static_cast<const T*>(data(lists.grads[t])),
              static_cast<S*>(data(lists.square_avgs[t])), state_ptr(lists.momentum_buffers, t),
              state_ptr(lists.grad_avgs, t), numel, {}, {}};
          if constexpr (kQuantized) {
            span.scales = {scales_ptr(lists.square_avg_scales, t),
                           scales_ptr(lists.momentum_buffer_scales, t),
                           scales_ptr(lists.grad_avg_scales, t)};
          }
          // A span is cut where the generator's segment changes (every 2^32
          // elements); without rounding it is one piece.
          for (int64_t lo = first; lo < last;) {
            int64_t hi = last;
            Span<T, S> piece = span.at(lo, 0);
            if constexpr (Tag::kStochastic) {
              const int64_t segment = lo >> 32;
              hi = std::min(last, (segment + 1) << 32);
              piece.rounding = {RoundingKeys(rounding[t].first, rounding[t].second, segment),
                                static_cast<uint32_t>(lo)};
            }
            piece.n = hi - lo;
            update_param<Tag::kMomentum, Tag::kCentered, Tag::kStochastic>(piece, c);
            lo = hi;
          }
        }
      });
}

void rmsprop_cpu(const TensorLists& lists, const RMSpropOptions& opts) {
  if (skipped_on_host(lists.found_inf)) {
    return;  // AMP found inf/NaN gradients: this step changes nothing
  }
  dispatch_rmsprop(lists, [&](auto tag) { run_cpu<decltype(tag)>(lists, opts); });
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fused_rmsprop, CPU, m) {
  m.impl("rmsprop_", &rmsprop_boxed<&rmsprop_cpu>);
}

}  // namespace fused_rmsprop
