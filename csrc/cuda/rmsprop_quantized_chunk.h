// The CUDA kernel's chunk functor for 8-bit state (NOTE: [8-bit state codes]).
#pragma once

#include <cstdint>

#include "../opmath.h"
#include "../quantized_state.h"
#include "../rmsprop_rule.h"
#include "../stochastic_rounding.h"
#include "chunk_common.h"
#include "cuda_or_emulation.h"
#include "multi_tensor_apply.h"

namespace fused_rmsprop {

// NOTE: [warp blocks] With 8-bit state, each block of kQuantBlock = 32 x kILP
// elements is updated by one warp: lane l updates elements 4l .. 4l + 3 (as
// in the full-precision fast path, so loads stay coalesced), the warp takes
// the largest |x| of its lanes with shuffles (the block's new scale), and
// each lane encodes its elements with it. A block's scale never needs more
// than its warp. The warps of a thread block take the chunk's blocks in turn.
// The host emulation runs threads one after another, so they cannot exchange
// values: there one emulated thread runs a whole warp, its lanes a loop
// (kLanesPerThread = 32) and the shuffle a max over that loop. The CUDA build
// has kLanesPerThread = 1. The arithmetic per element is the same either way.
constexpr int kWarpSize = 32;
static_assert(kQuantBlock == kWarpSize * kILP, "a block is one warp's vectors");

#if defined(FUSED_RMSPROP_EMULATION)
constexpr int kLanesPerThread = kWarpSize;
#else
constexpr int kLanesPerThread = 1;
#endif

// The largest of the warp's values.
FUSED_RMSPROP_DEVICE uint32_t warp_max(const uint32_t (&m)[kLanesPerThread]) {
#if defined(FUSED_RMSPROP_EMULATION)
  uint32_t r = 0;
  for (int l = 0; l < kLanesPerThread; ++l) {
    r = max_bits(r, m[l]);
  }
  return r;
#else
  uint32_t r = m[0];
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    r = max_bits(r, __shfl_xor_sync(0xFFFFFFFFu, r, offset));
  }
  return r;
#endif
}

template <typename Tag, int64_t kChunk>
struct RMSpropQuantizedChunk : ChunkLayout<Tag> {
  using Layout = ChunkLayout<Tag>;
  using typename Layout::M;
  using typename Layout::T;
  using Layout::kAvgScales;
  using Layout::kBufScales;
  using Layout::kCen;
  using Layout::kMom;
  using Layout::kScales;
  using Layout::kSR;  // bfloat16 params only
  static constexpr int kThreads = static_cast<int>(kBlockSize) / kLanesPerThread;
  static_assert(kChunk % kQuantBlock == 0, "a chunk holds whole blocks");

  template <typename Meta>
  FUSED_RMSPROP_DEVICE void operator()(
      const Meta& meta, const RMSpropOptions& opts, const DeviceScalars& device) const {
    typename Layout::Block setup;
    if (!Layout::template open<kChunk>(meta, opts, device, setup)) {
      return;
    }
    const auto& c = setup.c;
    const ChunkSpan chunk = setup.chunk;
    const int64_t start = chunk.start;
    const int64_t n = chunk.n;
    T* p = setup.p;
    const T* g = setup.g;
    uint8_t* vc = setup.v;  // codes
    uint8_t* bc = setup.b;
    uint8_t* ac = setup.a;
    float* vs = scales(meta, kScales, chunk);
    float* bs = kMom ? scales(meta, kBufScales, chunk) : nullptr;
    float* as = kCen ? scales(meta, kAvgScales, chunk) : nullptr;
    // NOTE: [fast path], per block: whole vectors at aligned addresses.
    const bool aligned = n % kQuantBlock == 0 && is_aligned(p) && is_aligned(g) &&
        is_aligned(vc) && (!kMom || is_aligned(bc)) && (!kCen || is_aligned(ac));
    constexpr int kL = kLanesPerThread;
    const int warp = static_cast<int>(threadIdx.x) / (kWarpSize / kL);
    const int warps = static_cast<int>(blockDim.x) / (kWarpSize / kL);
    for (int64_t block = warp; block * kQuantBlock < n; block += warps) {
      M rp[kL][kILP], rg[kL][kILP], rv[kL][kILP], rb[kL][kILP], ra[kL][kILP];
      uint8_t cv[kL][kILP], cb[kL][kILP] = {}, ca[kL][kILP] = {};
      uint32_t v_max[kL], b_max[kL], a_max[kL];
      const float v_scale = vs[block];
      const float b_scale = kMom ? bs[block] : 0.0f;
      const float a_scale = kCen ? as[block] : 0.0f;
      for (int l = 0; l < kL; ++l) {
        const int64_t first = block * kQuantBlock + lane(l) * kILP;
        if (aligned) {
          load_vector(rp[l], p, first / kILP);
          load_vector(rg[l], g, first / kILP);
          load_vector(cv[l], vc, first / kILP);
          if constexpr (kMom) load_vector(cb[l], bc, first / kILP);
          if constexpr (kCen) load_vector(ca[l], ac, first / kILP);
        } else {
#pragma unroll
          for (int k = 0; k < kILP; ++k) {
            const int64_t i = first + k;
            rp[l][k] = i < n ? static_cast<M>(p[i]) : M(0);
            rg[l][k] = i < n ? static_cast<M>(g[i]) : M(0);
            cv[l][k] = i < n ? vc[i] : 0;
            if constexpr (kMom) cb[l][k] = i < n ? bc[i] : 0;
            if constexpr (kCen) ca[l][k] = i < n ? ac[i] : 0;
          }
        }
        v_max[l] = b_max[l] = a_max[l] = 0;
        ElementBits bits[kILP];
#pragma unroll
        for (int k = 0; k < kILP; ++k) {
          rv[l][k] = static_cast<M>(decode_code<false>(cv[l][k]) * v_scale);
          rb[l][k] = kMom ? static_cast<M>(decode_code<true>(cb[l][k]) * b_scale) : M(0);
          ra[l][k] = kCen ? static_cast<M>(decode_code<true>(ca[l][k]) * a_scale) : M(0);
          rmsprop_update<kMom, kCen>(rp[l][k], rg[l][k], rv[l][k], rb[l][k], ra[l][k], c);
          if constexpr (kSR) {
            bits[k] = element_bits<false>(setup.keys, static_cast<uint32_t>(start + first + k));
          }
          if (first + k < n) {  // masked-off lanes do not raise the scale
            v_max[l] = max_bits(v_max[l], abs_bits(static_cast<float>(rv[l][k])));
            b_max[l] = max_bits(b_max[l], abs_bits(static_cast<float>(rb[l][k])));
            a_max[l] = max_bits(a_max[l], abs_bits(static_cast<float>(ra[l][k])));
          }
        }
        if (aligned) {
          store_vector<kSR, &ElementBits::param>(p, first / kILP, rp[l], bits);
        } else {
#pragma unroll
          for (int k = 0; k < kILP; ++k) {
            if (first + k < n) p[first + k] = store_rounded<T, kSR>(rp[l][k], bits[k].param());
          }
        }
      }
      encode_block<false>(vc, vs, block, n, aligned, rv, warp_max(v_max));
      if constexpr (kMom) encode_block<true>(bc, bs, block, n, aligned, rb, warp_max(b_max));
      if constexpr (kCen) encode_block<true>(ac, as, block, n, aligned, ra, warp_max(a_max));
    }
  }

  // The warp lane that loop iteration l of this thread runs.
  FUSED_RMSPROP_DEVICE static int lane(int l) {
    return kLanesPerThread == 1 ? static_cast<int>(threadIdx.x) % kWarpSize : l;
  }

  // Stores the block's new scale (max |x|, as bits) and its lanes' codes.
  template <bool kSigned>
  FUSED_RMSPROP_DEVICE static void encode_block(
      uint8_t* codes, float* scales, int64_t block, int64_t n, bool aligned,
      const M (&x)[kLanesPerThread][kILP], uint32_t max) {
    const float scale = bits_float(max);
    const float inverse = inverse_scale(scale);
    for (int l = 0; l < kLanesPerThread; ++l) {
      const int64_t first = block * kQuantBlock + lane(l) * kILP;
      if (lane(l) == 0) {
        scales[block] = scale;
      }
      AlignedVector<uint8_t, kILP> out;
#pragma unroll
      for (int k = 0; k < kILP; ++k) {
        out.val[k] = encode_code<kSigned>(static_cast<float>(x[l][k]) * inverse);
      }
      if (aligned) {
        reinterpret_cast<AlignedVector<uint8_t, kILP>*>(codes)[first / kILP] = out;
      } else {
#pragma unroll
        for (int k = 0; k < kILP; ++k) {
          if (first + k < n) codes[first + k] = out.val[k];
        }
      }
    }
  }

  // The scales of the chunk's blocks (address slot `slot`).
  template <typename Meta>
  FUSED_RMSPROP_DEVICE static float* scales(const Meta& meta, int slot, const ChunkSpan& chunk) {
    return static_cast<float*>(const_cast<void*>(meta.addresses[slot][chunk.tensor])) +
        chunk.start / kQuantBlock;
  }
};

}  // namespace fused_rmsprop
