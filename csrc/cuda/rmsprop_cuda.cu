// The CUDA implementation of fused_rmsprop::rmsprop_: multi-tensor apply of
// the kernel in rmsprop_kernel.h on the current stream, then the step
// counters' kernel (step_counter_kernel.h) on the same stream.
#include <cuda_runtime.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include "../dispatch.h"
#include "../op_entry.h"
#include "rmsprop_kernel.h"
#include "step_counter_kernel.h"

namespace fused_rmsprop {
namespace {

// The current stream of the current device (torch's, as c10's
// getCurrentCUDAStream gives it; NOTE: [stable ABI]).
cudaStream_t current_stream(const TensorRef& on_device) {
  void* stream = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(on_device.get_device_index(), &stream));
  return static_cast<cudaStream_t>(stream);
}

void check_launch() {
  const cudaError_t error = cudaGetLastError();
  FUSED_RMSPROP_CHECK(error == cudaSuccess, "fused_rmsprop: CUDA kernel launch failed: ",
                      cudaGetErrorString(error));
}

void rmsprop_cuda(const TensorLists& lists, const RMSpropOptions& opts) {
  const torch::stable::accelerator::DeviceGuard device_guard(lists.params[0].get_device_index());
  const cudaStream_t stream = current_stream(lists.params[0]);
  dispatch_rmsprop(lists, [&](auto tag) {
    run_multi_tensor<decltype(tag), kChunkSize, kDefaultArgBytes>(
        lists, opts, [&](auto kernel, int blocks, int threads, const auto&... args) {
          kernel<<<blocks, threads, 0, stream>>>(args...);
          check_launch();
        });
  });
}

void advance_counters_cuda(TensorList counters, const TensorRef& found_inf) {
  const torch::stable::accelerator::DeviceGuard device_guard(counters[0].get_device_index());
  const cudaStream_t stream = current_stream(counters[0]);
  advance_step_counters(counters, found_inf, [&](auto kernel, int blocks, int threads,
                                                 const auto& args) {
    kernel<<<blocks, threads, 0, stream>>>(args);
    check_launch();
  });
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fused_rmsprop, CUDA, m) {
  m.impl("rmsprop_", &rmsprop_boxed<&rmsprop_cuda, &advance_counters_cuda>);
}

}  // namespace fused_rmsprop
