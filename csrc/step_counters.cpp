#include "step_counters.h"

#include <optional>

namespace fused_rmsprop {

bool skipped_on_host(const TensorRef& found_inf) {
  return found_inf.defined() && found_inf.is_cpu() && read_host_scalar(found_inf) != 0.0;
}

StepCounters::StepCounters(TensorList state_steps, const TensorRef& found_inf, CounterPolicy policy,
                           AdvanceOnDevice advance_on_device)
    : found_inf_(found_inf), advance_on_device_(advance_on_device) {
  if (state_steps.empty()) {
    return;
  }
  // Whether the step is skipped, once the host knows it (reading a CPU
  // found_inf is free; a GPU one is read only when CPU counters need it).
  std::optional<bool> skipped;
  if (!found_inf.defined()) {
    skipped = false;
  } else if (found_inf.is_cpu() && policy == CounterPolicy::kHostWritesCpuCounters) {
    skipped = read_host_scalar(found_inf) != 0.0;
  }
  for (const TensorRef& s : state_steps) {
    const bool host = s.is_cpu() && policy == CounterPolicy::kHostWritesCpuCounters;
    if (!host) {
      FUSED_RMSPROP_CHECK(advance_on_device_ != nullptr,
          "fused_rmsprop: internal error: a counter in device memory on a device without "
          "a counter kernel");
      on_device_.push_back(s);
      continue;
    }
    if (!skipped.has_value()) {
      // CPU counters, found_inf on the GPU: the one case that must wait for
      // the device (the optimizer keeps counters on the params' device).
      skipped = read_scalar(found_inf) != 0.0;
    }
    if (!*skipped) {
      on_host_.push_back(s);
    }
  }
}

void StepCounters::advance() const {
  for (const TensorRef& s : on_host_) {
    if (dtype_of(s) == kFloat) {
      *static_cast<float*>(s.data_ptr()) += 1.0f;
    } else {
      *static_cast<double*>(s.data_ptr()) += 1.0;
    }
  }
  if (!on_device_.empty()) {
    advance_on_device_(on_device_, found_inf_);
  }
}

}  // namespace fused_rmsprop
