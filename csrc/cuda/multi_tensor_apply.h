// Multi-tensor apply: the host loop that cuts a list of tensors into chunks
// and packs them into as few kernel launches as the argument limit allows.
// Compiled by nvcc for the CUDA kernel and by the host compiler for the
// emulation build: one source for both.
#pragma once

#include <array>
#include <cstdint>

#include "cuda_or_emulation.h"
#include "../torch_api.h"

namespace fused_rmsprop {

// Elements per thread, and threads per block, as torch's fused optimizers.
constexpr int64_t kILP = 4;
constexpr int64_t kBlockSize = 512;
// Elements per chunk (one thread block processes one chunk).
constexpr int64_t kChunkSize = 65536;

// NOTE: [kernel argument limit] A launch carries its tensors' addresses and
// its blocks' (tensor, chunk) pairs in its kernel arguments. Kernel arguments
// were limited to 4 KB until CUDA 12.1, which raised the limit to 32764 bytes
// on Volta and newer GPUs with an R530 or newer driver. Two layouts follow,
// by the argument bytes they fit in; each gives, by depth (3: param, grad,
// square_avg; 4 and 5: + momentum_buffer, + grad_avg), the tensors and
// blocks one launch holds. The numbers are torch's MultiTensorApply.cuh ones
// for the same limits.
//
// Stochastic rounding adds two words per tensor (NOTE: [rounding generator]):
// the address of its step counter and its generator stream; the layouts for
// 6 and 7 words per tensor (entries 6 and 7 below) keep the bytes per launch
// of the 5-tensor layout. 8-bit state adds one address per state (its
// scales): up to 8 addresses, 9 and a word with stochastic rounding
// (entries 8 to 10).
//
// 4 KB: 320 blocks, 61 % of one wave on an H100 (132 SMs x 4 resident
// 512-thread blocks); a 1e9-element step needs 48 launches.
// 32 KB: 2240 blocks (4.2 waves on an H100); a 1e9-element step needs 7 and a
// GPT-2-small step (148 tensors, 124M elements) one.
constexpr int kSmallArgBytes = 4096;
constexpr int kLargeArgBytes = 32764;

template <int kArgBytes>
struct LaunchLimits;

template <>
struct LaunchLimits<kSmallArgBytes> {
  static constexpr int kTensors[11] = {0, 0, 0, 48, 36, 30, 25, 22, 20, 18, 16};
  static constexpr int kBlocks = 320;
  using BlockToTensor = unsigned char;
};

template <>
struct LaunchLimits<kLargeArgBytes> {
  static constexpr int kTensors[11] = {0, 0, 0, 336, 252, 210, 180, 157, 140, 126, 114};
  static constexpr int kBlocks = 2240;
  using BlockToTensor = uint16_t;
};

// The layout a CUDA build launches with. A CUDA >= 13 toolkit needs an R580
// or newer driver and a Turing or newer GPU, so 32 KB arguments are always
// available; a CUDA 12 build may meet a driver older than R530 at run time,
// so it keeps the 4 KB layout (torch decides the same way). The emulation
// build offers both (its tests choose).
#if defined(CUDART_VERSION) && CUDART_VERSION >= 13000
constexpr int kDefaultArgBytes = kLargeArgBytes;
#elif defined(FUSED_RMSPROP_EMULATION)
constexpr int kDefaultArgBytes = kLargeArgBytes;  // as the CUDA 13 build
#else
constexpr int kDefaultArgBytes = kSmallArgBytes;
#endif

// One 64-bit word per tensor besides its addresses, or nothing.
template <int kTensors, bool kWords>
struct TensorWords {
  uint64_t word[kTensors];
};
template <int kTensors>
struct TensorWords<kTensors, false> {};

// kDepth addresses per tensor (a tensor of each list), and with kWords one
// more word (the rounding generator's stream).
template <int kDepth, int kArgBytes, bool kWords = false>
struct TensorListMetadata
    : TensorWords<LaunchLimits<kArgBytes>::kTensors[kDepth + kWords], kWords> {
  using Limits = LaunchLimits<kArgBytes>;
  static constexpr int kTensors = Limits::kTensors[kDepth + kWords];
  static constexpr int kBlocks = Limits::kBlocks;
  const void* addresses[kDepth][kTensors];
  int64_t numel[kTensors];
  typename Limits::BlockToTensor block_to_tensor[kBlocks];
  int32_t block_to_chunk[kBlocks];
};

// What else a launch passes (RMSpropOptions, DeviceScalars) stays under 256 bytes.
constexpr int kOtherArgBytes = 256;
static_assert(sizeof(TensorListMetadata<3, kSmallArgBytes>) <= kSmallArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<4, kSmallArgBytes>) <= kSmallArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<5, kSmallArgBytes>) <= kSmallArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<3, kLargeArgBytes>) <= kLargeArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<4, kLargeArgBytes>) <= kLargeArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<5, kLargeArgBytes>) <= kLargeArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<4, kSmallArgBytes, true>) <= kSmallArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<5, kSmallArgBytes, true>) <= kSmallArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<6, kSmallArgBytes, true>) <= kSmallArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<4, kLargeArgBytes, true>) <= kLargeArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<5, kLargeArgBytes, true>) <= kLargeArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<6, kLargeArgBytes, true>) <= kLargeArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<8, kSmallArgBytes>) <= kSmallArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<9, kSmallArgBytes, true>) <= kSmallArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<8, kLargeArgBytes>) <= kLargeArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<9, kLargeArgBytes, true>) <= kLargeArgBytes - kOtherArgBytes);
static_assert(sizeof(TensorListMetadata<3, kSmallArgBytes>) ==
              sizeof(TensorListMetadata<3, kSmallArgBytes, false>));

// Calls launch(meta, num_blocks) for each launch needed to cover every chunk
// of every non-empty tensor of `lists` (lists[d][t] is tensor t of list d);
// with kWords, words[t] is tensor t's word.
//
// NOTE: [carry-over] A launch is issued when its tensor slots or block slots
// are full. If that happens in the middle of a tensor, the tensor's entry is
// moved to slot 0 of the next launch, whose blocks continue with the tensor's
// next chunk: a tensor may straddle any number of launches.
template <int kDepth, int64_t kChunk, int kArgBytes, bool kWords = false, typename Launch>
void multi_tensor_apply(
    const std::array<TensorList, kDepth>& lists, const Launch& launch,
    torch::headeronly::HeaderOnlyArrayRef<uint64_t> words = {}) {
  using Meta = TensorListMetadata<kDepth, kArgBytes, kWords>;
  using BlockToTensor = typename Meta::Limits::BlockToTensor;
  Meta meta;
  int tensors = 0;
  int blocks = 0;
  const size_t n = lists[0].size();
  for (size_t t = 0; t < n; ++t) {
    const int64_t numel = lists[0][t].numel();
    if (numel == 0) {
      continue;
    }
    meta.numel[tensors] = numel;
    for (int d = 0; d < kDepth; ++d) {
      meta.addresses[d][tensors] = lists[d][t].data_ptr();
    }
    if constexpr (kWords) {
      meta.word[tensors] = words[t];
    }
    ++tensors;
    const int64_t chunks = (numel + kChunk - 1) / kChunk;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      meta.block_to_tensor[blocks] = static_cast<BlockToTensor>(tensors - 1);
      meta.block_to_chunk[blocks] = static_cast<int32_t>(chunk);
      ++blocks;
      const bool last_chunk = chunk == chunks - 1;
      if (blocks == Meta::kBlocks || (tensors == Meta::kTensors && last_chunk)) {
        launch(meta, blocks);
        blocks = 0;
        if (last_chunk) {
          tensors = 0;
        } else {
          meta.numel[0] = meta.numel[tensors - 1];
          for (int d = 0; d < kDepth; ++d) {
            meta.addresses[d][0] = meta.addresses[d][tensors - 1];
          }
          if constexpr (kWords) {
            meta.word[0] = meta.word[tensors - 1];
          }
          tensors = 1;
        }
      }
    }
  }
  if (blocks > 0) {
    launch(meta, blocks);
  }
}

}  // namespace fused_rmsprop
