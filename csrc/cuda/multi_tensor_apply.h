// Multi-tensor apply: the host loop that cuts a list of tensors into chunks
// and packs them into as few kernel launches as the argument limit allows.
// Compiled by nvcc for the CUDA kernel and by the host compiler for the
// emulation build: one source for both.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <array>
#include <cstdint>

namespace fused_rmsprop {

// Elements per thread, and threads per block, as torch's fused optimizers.
constexpr int64_t kILP = 4;
constexpr int64_t kBlockSize = 512;
// Elements per chunk (one thread block processes one chunk).
constexpr int64_t kChunkSize = 65536;

// NOTE: [kernel argument limit] Kernel arguments are limited to 4 KB on every
// CUDA version we build for, so one launch carries at most this many tensors
// and blocks, by depth (3: param, grad, square_avg; 4 and 5: + momentum_buffer,
// + grad_avg). The numbers are torch's for the 4 KB limit; the static_assert
// below checks that they fit.
constexpr int kMaxTensors[6] = {0, 0, 0, 48, 36, 30};
constexpr int kMaxBlocks = 320;

template <int kDepth>
struct TensorListMetadata {
  static constexpr int kTensors = kMaxTensors[kDepth];
  const void* addresses[kDepth][kTensors];
  int64_t numel[kTensors];
  unsigned char block_to_tensor[kMaxBlocks];
  int32_t block_to_chunk[kMaxBlocks];
};

static_assert(sizeof(TensorListMetadata<3>) <= 4096 - 256, "launch arguments");
static_assert(sizeof(TensorListMetadata<4>) <= 4096 - 256, "launch arguments");
static_assert(sizeof(TensorListMetadata<5>) <= 4096 - 256, "launch arguments");

// Calls launch(meta, num_blocks) for each launch needed to cover every chunk
// of every non-empty tensor of `lists` (lists[d][t] is tensor t of list d).
//
// NOTE: [carry-over] A launch is issued when its tensor slots or block slots
// are full. If that happens in the middle of a tensor, the tensor's entry is
// moved to slot 0 of the next launch, whose blocks continue with the tensor's
// next chunk: a tensor may straddle any number of launches.
template <int kDepth, int64_t kChunk, typename Launch>
void multi_tensor_apply(
    const std::array<at::TensorList, kDepth>& lists, const Launch& launch) {
  using Meta = TensorListMetadata<kDepth>;
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
    ++tensors;
    const int64_t chunks = (numel + kChunk - 1) / kChunk;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      meta.block_to_tensor[blocks] = static_cast<unsigned char>(tensors - 1);
      meta.block_to_chunk[blocks] = static_cast<int32_t>(chunk);
      ++blocks;
      const bool last_chunk = chunk == chunks - 1;
      if (blocks == kMaxBlocks || (tensors == Meta::kTensors && last_chunk)) {
        launch(meta, blocks);
        blocks = 0;
        if (last_chunk) {
          tensors = 0;
        } else {
          meta.numel[0] = meta.numel[tensors - 1];
          for (int d = 0; d < kDepth; ++d) {
            meta.addresses[d][0] = meta.addresses[d][tensors - 1];
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
