// The step counters a call advances, and whether AMP skips the step.
#pragma once

#include <vector>

#include "torch_api.h"

namespace fused_rmsprop {

// True when found_inf is a CPU tensor that says the step is skipped.
bool skipped_on_host(const TensorRef& found_inf);

// Which step counters the host writes itself. On the CPU op and the CUDA op:
// the ones in host memory (one add each, no kernel). The emulation of the
// CUDA op treats its CPU tensors as device memory, so that tests on a machine
// without a GPU run the device path (kDeviceForAll).
enum class CounterPolicy { kHostWritesCpuCounters, kDeviceForAll };

// Advances the counters in device memory by 1, or leaves them when found_inf
// (undefined, or a one-element float32 tensor on the device) is not zero: a
// device's kernel (cuda/step_counter_kernel.h), with no host synchronisation.
using AdvanceOnDevice = void (*)(TensorList counters, const TensorRef& found_inf);

// NOTE: [step counters] A call's step counters are advanced after the update,
// by 1 unless found_inf says the step is skipped. Everything that can fail or
// must read found_inf on the host is done by the constructor, which runs
// before the update writes anything, so a call cannot leave params and state
// updated with counters that were not (or the reverse). Counters on a device
// are advanced by one kernel that reads found_inf there (no host
// synchronisation); only CPU counters with a found_inf on a GPU make the host
// wait, which the optimizer avoids by keeping counters with the params.
class StepCounters {
 public:
  // advance_on_device: the device's kernel, or nullptr for a device whose
  // counters are all in host memory (the CPU op); then every counter must be.
  StepCounters(TensorList state_steps, const TensorRef& found_inf, CounterPolicy policy,
               AdvanceOnDevice advance_on_device);
  void advance() const;

 private:
  std::vector<TensorRef> on_host_;    // written by the host (none when skipped)
  std::vector<TensorRef> on_device_;  // advanced by advance_on_device_
  TensorRef found_inf_;
  AdvanceOnDevice advance_on_device_;
};

}  // namespace fused_rmsprop
