// The CUDA implementation of fused_rmsprop::rmsprop_: multi-tensor apply of
// the kernel in rmsprop_kernel.h on the current stream.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../dispatch.h"
#include "../op_entry.h"
#include "rmsprop_kernel.h"

namespace fused_rmsprop {
namespace {

void rmsprop_cuda(const TensorLists& lists, const RMSpropOptions& opts) {
  const c10::cuda::CUDAGuard device_guard(lists.params[0].device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_rmsprop(lists, [&](auto tag) {
    run_multi_tensor<decltype(tag), kChunkSize, kDefaultArgBytes>(
        lists, opts, [&](auto kernel, int blocks, int threads, const auto&... args) {
          kernel<<<blocks, threads, 0, stream>>>(args...);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_rmsprop, CUDA, m) {
  m.impl("rmsprop_", &rmsprop_entry<&rmsprop_cuda>);
}

}  // namespace fused_rmsprop
