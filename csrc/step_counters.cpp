#include "step_counters.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/clamp_max.h>

#include <optional>

namespace fused_rmsprop {

bool skipped_on_host(const at::Tensor& found_inf) {
  return found_inf.defined() && found_inf.device().is_cpu() &&
      found_inf.item<float>() != 0.0f;
}

StepCounters::StepCounters(
    at::TensorList state_steps, const at::Tensor& found_inf, CounterPolicy policy) {
  if (state_steps.empty()) {
    return;
  }
  // Whether the step is skipped, once the host knows it (reading a CPU
  // found_inf is free; a GPU one is read only when CPU counters need it).
  std::optional<bool> skipped;
  if (!found_inf.defined()) {
    skipped = false;
  } else if (found_inf.device().is_cpu() && policy == CounterPolicy::kHostWritesCpuCounters) {
    skipped = found_inf.item<float>() != 0.0f;
  }
  for (const at::Tensor& s : state_steps) {
    const bool host = s.device().is_cpu() && policy == CounterPolicy::kHostWritesCpuCounters;
    if (!host) {
      on_device_.push_back(s);
      continue;
    }
    if (!skipped.has_value()) {
      // CPU counters, found_inf on the GPU: the one case that must wait for
      // the device (the optimizer keeps counters on the params' device).
      skipped = found_inf.item<float>() != 0.0f;
    }
    if (!*skipped) {
      on_host_.push_back(s);
    }
  }
  if (!on_device_.empty() && found_inf.defined()) {
    // NOTE: [step increment] 1 when the step is taken, 0 when skipped,
    // computed on the device (no host synchronisation) and before the
    // update writes anything. found_inf may be any one-element tensor (shape
    // [] or [1], ...); foreach_add_ needs a 0-dim one.
    increment_ = 1.0 - found_inf.reshape({}).clamp_max(1.0);
  }
}

void StepCounters::advance() const {
  for (const at::Tensor& s : on_host_) {
    if (s.scalar_type() == at::kFloat) {
      *s.data_ptr<float>() += 1.0f;
    } else {
      *s.data_ptr<double>() += 1.0;
    }
  }
  if (on_device_.empty()) {
    return;
  }
  if (increment_.defined()) {
    at::_foreach_add_(on_device_, increment_);
  } else {
    at::_foreach_add_(on_device_, 1);
  }
}

}  // namespace fused_rmsprop
