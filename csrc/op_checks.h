// Argument checks shared by every implementation of the fused_rmsprop ops.
// They run over every tensor before any kernel touches memory, so a call that
// raises leaves all parameters and state unchanged.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <vector>

#include "rmsprop_rule.h"

namespace fused_rmsprop {

struct TensorLists {
  at::TensorList params;
  at::TensorList grads;
  at::TensorList square_avgs;
  at::TensorList momentum_buffers;  // empty: no momentum
  at::TensorList grad_avgs;         // empty: not centered
  at::TensorList state_steps;       // empty: no step counters to advance
  // AMP (GradScaler's protocol): divide grads by grad_scale; when found_inf
  // is non-zero, change nothing at all. One-element float32 tensors on the
  // params' device, or undefined.
  at::Tensor grad_scale;
  at::Tensor found_inf;
  // A one-element float32 or float64 learning rate on the params' device,
  // read by the kernel in place of `lr` (a Tensor lr: no host sync, no
  // recompile under torch.compile, CUDA-graph safe), or undefined.
  at::Tensor lr_tensor;
  // A one-element float32 or float64 factor every gradient is multiplied by
  // after unscaling (the clipping coefficient), read by the kernel in the
  // params' opmath type; or undefined.
  at::Tensor grad_factor;
  // Stochastic rounding of bfloat16 stores (NOTE: [stochastic rounding]):
  // one id per param (its index in the optimizer), or empty to round to
  // nearest; the generator's seed.
  c10::ArrayRef<int64_t> rounding_ids;
  int64_t rounding_seed = 0;
  // 8-bit state (NOTE: [8-bit state codes]): square_avgs, momentum_buffers
  // and grad_avgs hold uint8 codes, and these the float32 scales of their
  // blocks (one 1-D tensor per param); all empty for full-precision state.
  at::TensorList square_avg_scales;
  at::TensorList momentum_buffer_scales;
  at::TensorList grad_avg_scales;

  bool has_momentum() const { return !momentum_buffers.empty(); }
  bool centered() const { return !grad_avgs.empty(); }
  bool stochastic_rounding() const { return !rounding_ids.empty(); }
  bool quantized() const { return !square_avg_scales.empty(); }
};

// Checks the hyperparameters and every tensor of `lists`: matching list
// lengths, one device, float params (float64/32/16, bfloat16) with grads of
// the same dtype, state either of the param dtype or float32 for half-precision
// params, equal shapes, and one dense memory layout shared by a parameter,
// its gradient and its state; step counters are one-element float tensors on
// the CPU or the params' device; with stochastic rounding, bfloat16 params,
// one id per param, and step counters of one dtype on the params' device (the
// kernel reads them); with 8-bit state, uint8 codes laid out like the params
// and one contiguous float32 scale per block of each. Raises c10::Error
// naming the first offender.
void check_rmsprop_args(const TensorLists& lists, const RMSpropOptions& opts);

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

using RMSpropImpl = void (*)(const TensorLists&, const RMSpropOptions&);

// Checks everything and prepares the step counters, then (unless impl is
// null: the check-only op) updates and advances the counters.
inline void run_checked(const TensorLists& lists, const RMSpropOptions& opts, RMSpropImpl impl,
                        CounterPolicy policy = CounterPolicy::kHostWritesCpuCounters) {
  check_rmsprop_args(lists, opts);
  if (impl == nullptr) {
    return;
  }
  const StepCounters steps(lists.state_steps, lists.found_inf, policy);
  if (!lists.params.empty()) {
    impl(lists, opts);
  }
  steps.advance();
}

// The op's C++ signature, written once: every device registers
// `rmsprop_entry<its_impl>`, which packs the arguments, checks them all, and
// only then hands them to the device's implementation. With impl == nullptr
// it is the check-only op, fused_rmsprop::rmsprop_check.
template <RMSpropImpl impl>
void rmsprop_entry(
    at::TensorList params,
    at::TensorList grads,
    at::TensorList square_avgs,
    at::TensorList momentum_buffers,
    at::TensorList grad_avgs,
    at::TensorList state_steps,
    double lr,
    double alpha,
    double eps,
    double weight_decay,
    double momentum,
    bool maximize,
    bool eps_in_sqrt,
    bool lr_in_momentum,
    bool decoupled_weight_decay,
    const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf,
    const std::optional<at::Tensor>& lr_tensor,
    const std::optional<at::Tensor>& grad_factor,
    c10::ArrayRef<int64_t> rounding_ids,
    int64_t rounding_seed,
    std::optional<at::TensorList> square_avg_scales,
    std::optional<at::TensorList> momentum_buffer_scales,
    std::optional<at::TensorList> grad_avg_scales) {
  const TensorLists lists{params, grads, square_avgs, momentum_buffers, grad_avgs,
      state_steps, grad_scale.value_or(at::Tensor()), found_inf.value_or(at::Tensor()),
      lr_tensor.value_or(at::Tensor()), grad_factor.value_or(at::Tensor()), rounding_ids,
      rounding_seed, square_avg_scales.value_or(at::TensorList()),
      momentum_buffer_scales.value_or(at::TensorList()),
      grad_avg_scales.value_or(at::TensorList())};
  const RMSpropOptions opts{lr, alpha, eps, weight_decay, momentum, maximize,
      eps_in_sqrt, lr_in_momentum, decoupled_weight_decay};
  run_checked(lists, opts, impl);
}

}  // namespace fused_rmsprop
