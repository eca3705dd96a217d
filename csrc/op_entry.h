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

// Checks a boxed call's argument and output counts against the schema's.
inline void check_boxed_call(uint64_t num_args, uint64_t num_outputs, uint64_t expected_args) {
  FUSED_RMSPROP_CHECK(num_args == expected_args && num_outputs == 0,
      "fused_rmsprop: internal error: the op's schema has ", num_args, " arguments and ",
      num_outputs, " outputs; its kernel takes ", expected_args, " and returns none");
}

// The boxed kernel every device registers for rmsprop_ (and, with impl ==
// nullptr, for rmsprop_check): the arguments are unpacked by the table
// (NOTE: [argument table]) as borrowed handles (NOTE: [stable ABI]).
template <RMSpropImpl impl, AdvanceOnDevice advance_on_device = nullptr>
void rmsprop_boxed(StableIValue* stack, uint64_t num_args, uint64_t num_outputs) {
  check_boxed_call(num_args, num_outputs, kTableArgs);
  BorrowedArgs borrowed;
  TensorLists lists;
  RMSpropOptions opts{};
  unpack_args(stack, borrowed, lists, opts);
  run_checked(lists, opts, impl, advance_on_device);
}

}  // namespace fused_rmsprop
