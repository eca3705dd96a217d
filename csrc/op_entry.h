// The entry of fused_rmsprop::rmsprop_ and rmsprop_check, shared by every
// device: it packs the arguments, checks them all, prepares the step
// counters, and only then hands the call to the device's implementation.
#pragma once

#include "op_args.h"
#include "op_checks.h"
#include "step_counters.h"

namespace fused_rmsprop {

using RMSpropImpl = void (*)(const TensorLists&, const RMSpropOptions&);

// NOTE: [checks first] Everything that can refuse a call (the checks, the
// counters' setup) runs before the implementation writes anything, so a
// refused call changes nothing: the optimizer relies on this to run a step's
// only call without a separate check (fused_rmsprop/optimizer.py). With
// impl == nullptr, only the checks run (the check-only op).
// advance_on_device: the device's counter kernel (nullptr on the CPU).
inline void run_checked(const TensorLists& lists, const RMSpropOptions& opts, RMSpropImpl impl,
                        AdvanceOnDevice advance_on_device,
                        CounterPolicy policy = CounterPolicy::kHostWritesCpuCounters) {
  check_rmsprop_args(lists, opts);
  if (impl == nullptr) {
    return;
  }
  const StepCounters steps(lists.state_steps, lists.found_inf, policy, advance_on_device);
  if (!lists.params.empty()) {
    impl(lists, opts);
  }
  steps.advance();
}

// Every device registers TORCH_BOX(&rmsprop_entry<its_impl, its_counter_kernel>);
// its signature is the argument table's (NOTE: [argument table]).
template <RMSpropImpl impl, AdvanceOnDevice advance_on_device = nullptr>
void rmsprop_entry(TensorList params FUSED_RMSPROP_DECLARE_ARGS) {
  TensorLists lists;
  RMSpropOptions opts{};
  FUSED_RMSPROP_PACK_ARGS
  run_checked(lists, opts, impl, advance_on_device);
}

}  // namespace fused_rmsprop
