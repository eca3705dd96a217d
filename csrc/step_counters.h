// The step counters a call advances, and whether AMP skips the step.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <vector>

namespace fused_rmsprop {

// True when found_inf is a CPU tensor that says the step is skipped.
bool skipped_on_host(const at::Tensor& found_inf);

// Which step counters the host writes itself. On the CPU op and the CUDA op:
// the ones in host memory (one add each, no kernel). The emulation of the
// CUDA op treats its CPU tensors as device memory, so that tests on a machine
// without a GPU run the device path (kDeviceForAll).
enum class CounterPolicy { kHostWritesCpuCounters, kDeviceForAll };

// NOTE: [step counters] A call's step counters are advanced after the update,
// by 1 unless found_inf says the step is skipped. Everything that can fail or
// must read found_inf on the host is done by the constructor, which runs
// before the update writes anything, so a call cannot leave params and state
// updated with counters that were not (or the reverse). Counters on a device
// are advanced by one foreach kernel by a device-side increment (no host
// synchronisation); only CPU counters with a found_inf on a GPU make the
// host wait, which the optimizer avoids by keeping counters with the params.
class StepCounters {
 public:
  StepCounters(at::TensorList state_steps, const at::Tensor& found_inf, CounterPolicy policy);
  void advance() const;

 private:
  std::vector<at::Tensor> on_host_;    // written by the host (none when skipped)
  std::vector<at::Tensor> on_device_;  // one foreach_add_ by increment_ (or 1)
  at::Tensor increment_;               // 0-dim 1 - found_inf, or undefined
};

}  // namespace fused_rmsprop
