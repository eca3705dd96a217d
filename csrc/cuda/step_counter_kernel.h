// The kernel that advances step counters in device memory (NOTE: [step
// counters]): one thread per counter adds 1, unless found_inf says the step
// is skipped. It reads found_inf on the device, so the host never waits.
// Compiled by nvcc (cuda/rmsprop_cuda.cu) and by the emulation build.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda_or_emulation.h"
#include "../torch_api.h"

namespace fused_rmsprop {

// Counters per launch: their addresses and dtypes stay far below the 4 KB of
// kernel arguments every CUDA version allows.
constexpr int kCountersPerLaunch = 256;

struct StepCounterArgs {
  void* counter[kCountersPerLaunch];
  bool is_double[kCountersPerLaunch];  // float64, else float32
  int count;
  const float* found_inf;  // nullptr: the step is taken
};

FUSED_RMSPROP_GLOBAL void advance_step_counters_kernel(
    FUSED_RMSPROP_KERNEL_ARG(StepCounterArgs) args) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= args.count || (args.found_inf != nullptr && *args.found_inf != 0.0f)) {
    return;
  }
  if (args.is_double[i]) {
    *static_cast<double*>(args.counter[i]) += 1.0;
  } else {
    *static_cast<float*>(args.counter[i]) += 1.0f;
  }
}

// Calls launch(kernel, blocks, threads, args) for every kCountersPerLaunch
// counters; found_inf: undefined, or a one-element float32 tensor on the
// counters' device (checked by check_rmsprop_args).
template <typename Launch>
void advance_step_counters(TensorList counters, const TensorRef& found_inf, const Launch& launch) {
  StepCounterArgs args{};
  args.found_inf = found_inf.defined() ? static_cast<const float*>(found_inf.data_ptr()) : nullptr;
  const int64_t n = static_cast<int64_t>(counters.size());
  for (int64_t first = 0; first < n; first += kCountersPerLaunch) {
    args.count = static_cast<int>(std::min<int64_t>(kCountersPerLaunch, n - first));
    for (int i = 0; i < args.count; ++i) {
      const TensorRef& c = counters[first + i];
      args.counter[i] = c.data_ptr();
      args.is_double[i] = dtype_of(c) == kDouble;
    }
    launch(&advance_step_counters_kernel, 1, args.count, args);
  }
}

}  // namespace fused_rmsprop
