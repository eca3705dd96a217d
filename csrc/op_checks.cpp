#include "op_checks.h"

#include "quantized_state.h"

#include <utility>

namespace fused_rmsprop {
namespace {

bool is_supported_param_dtype(ScalarType t) {
  return t == kFloat || t == kDouble || t == kHalf ||
      t == kBFloat16;
}

// Two tensors of one shape share a memory layout when every dimension of
// size > 1 has the same stride (strides of size-1 dims never matter).
bool same_layout(const Tensor& a, const Tensor& b) {
  const IntList sizes = a.sizes();
  const IntList a_strides = a.strides();
  const IntList b_strides = b.strides();
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] > 1 && a_strides[d] != b_strides[d]) {
      return false;
    }
  }
  return true;
}

void check_list(
    const char* name,
    TensorList list,
    const TensorLists& lists,
    bool is_state,
    ScalarType expected_state_dtype) {
  const auto n = lists.params.size();
  FUSED_RMSPROP_CHECK(
      list.size() == n,
      "fused_rmsprop: ", name, " has ", list.size(),
      " tensors but params has ", n);
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = lists.params[i];
    const Tensor& t = list[i];
    FUSED_RMSPROP_CHECK(
        t.defined(), "fused_rmsprop: ", name, "[", i, "] is undefined");
    FUSED_RMSPROP_CHECK(
        t.layout() == Layout::Strided,
        "fused_rmsprop: ", name, "[", i, "] must be a dense (strided) tensor, got ",
        to_string(t.layout()), " (sparse gradients are not supported)");
    FUSED_RMSPROP_CHECK(
        t.device() == lists.params[0].device(),
        "fused_rmsprop: all tensors must be on one device; ", name, "[", i,
        "] is on ", to_string(t.device()), " but params[0] is on ",
        to_string(lists.params[0].device()));
    FUSED_RMSPROP_CHECK(
        t.sizes().equals(p.sizes()),
        "fused_rmsprop: ", name, "[", i, "] has shape ", to_string(t.sizes()),
        " but params[", i, "] has shape ", to_string(p.sizes()));
    const auto want = is_state ? expected_state_dtype : p.scalar_type();
    FUSED_RMSPROP_CHECK(
        t.scalar_type() == want,
        "fused_rmsprop: ", name, "[", i, "] has dtype ", t.scalar_type(),
        ", expected ", want);
    FUSED_RMSPROP_CHECK(
        is_non_overlapping_and_dense(t) && same_layout(t, p),
        "fused_rmsprop: ", name, "[", i, "] must be dense and laid out in memory "
        "like params[", i, "] (same strides); got strides ", to_string(t.strides()),
        " for params strides ", to_string(p.strides()));
  }
}

// Stochastic rounding: the kernel reads each param's step counter (the
// generator's position) on the params' device, all in one dtype.
void check_rounding_args(const TensorLists& lists) {
  const auto n = lists.params.size();
  const Tensor& p0 = lists.params[0];
  FUSED_RMSPROP_CHECK(lists.rounding_ids.size() == n,
      "fused_rmsprop: rounding_ids has ", lists.rounding_ids.size(),
      " ids but params has ", n, " (pass one per param, or none to round to nearest)");
  FUSED_RMSPROP_CHECK(p0.scalar_type() == kBFloat16,
      "fused_rmsprop: stochastic rounding (rounding_ids) is for bfloat16 params; params "
      "have dtype ", p0.scalar_type());
  FUSED_RMSPROP_CHECK(lists.state_steps.size() == n,
      "fused_rmsprop: stochastic rounding needs state_steps (one per param: the "
      "generator's position), got ", lists.state_steps.size(), " for ", n, " params");
  const auto step_dtype = lists.state_steps[0].scalar_type();
  for (size_t i = 0; i < n; ++i) {
    const Tensor& s = lists.state_steps[i];
    FUSED_RMSPROP_CHECK(s.device() == p0.device() && s.scalar_type() == step_dtype,
        "fused_rmsprop: with stochastic rounding, state_steps[", i, "] must be on ",
        to_string(p0.device()), " with dtype ", step_dtype, " (as state_steps[0]); got ",
        to_string(s.device()), " and ", s.scalar_type());
  }
}

// 8-bit state: each param's scales of one state, a contiguous float32 tensor
// of one element per block of kQuantBlock elements (its last may be partial).
void check_scales(const char* name, TensorList list, bool wanted, const TensorLists& lists) {
  const auto n = lists.params.size();
  FUSED_RMSPROP_CHECK(list.size() == (wanted ? n : 0),
      "fused_rmsprop: ", name, " has ", list.size(), " tensors; expected ", wanted ? n : 0,
      " (one per param when its state list is given and the state is 8-bit, else none)");
  for (size_t i = 0; i < list.size(); ++i) {
    const Tensor& t = list[i];
    const int64_t blocks = (lists.params[i].numel() + kQuantBlock - 1) / kQuantBlock;
    FUSED_RMSPROP_CHECK(t.defined() && t.layout() == Layout::Strided && t.scalar_type() == kFloat &&
        t.dim() == 1 && t.numel() == blocks && t.is_contiguous() &&
        t.device() == lists.params[0].device(),
        "fused_rmsprop: ", name, "[", i, "] must be a contiguous 1-D float32 tensor of ",
        blocks, " elements (one per block of ", kQuantBlock, " elements of params[", i,
        "]) on ", to_string(lists.params[0].device()), "; got ",
        t.defined() ? to_string(t.sizes()) : "[]", ", ",
        t.defined() ? t.scalar_type() : kFloat, ", ",
        to_string(t.defined() ? t.device() : Device(DeviceType::CPU)));
  }
}

}  // namespace

void check_rmsprop_args(const TensorLists& lists, const RMSpropOptions& o) {
  // The same bounds as torch.optim.RMSprop (which allows alpha > 1).
  FUSED_RMSPROP_CHECK(o.lr >= 0, "fused_rmsprop: lr must be >= 0, got ", o.lr);
  FUSED_RMSPROP_CHECK(o.alpha >= 0, "fused_rmsprop: alpha must be >= 0, got ", o.alpha);
  FUSED_RMSPROP_CHECK(o.eps >= 0, "fused_rmsprop: eps must be >= 0, got ", o.eps);
  FUSED_RMSPROP_CHECK(o.weight_decay >= 0,
      "fused_rmsprop: weight_decay must be >= 0, got ", o.weight_decay);
  FUSED_RMSPROP_CHECK(o.momentum >= 0,
      "fused_rmsprop: momentum must be >= 0, got ", o.momentum);
  FUSED_RMSPROP_CHECK(o.momentum == 0 || lists.has_momentum(),
      "fused_rmsprop: momentum = ", o.momentum,
      " > 0 needs one momentum_buffer per parameter, got an empty list");

  const auto n = lists.params.size();
  if (n == 0) {
    FUSED_RMSPROP_CHECK(lists.grads.empty() && lists.square_avgs.empty() &&
        lists.momentum_buffers.empty() && lists.grad_avgs.empty() &&
        lists.rounding_ids.empty() && lists.square_avg_scales.empty() &&
        lists.momentum_buffer_scales.empty() && lists.grad_avg_scales.empty(),
        "fused_rmsprop: params is empty but the other lists are not");
    return;
  }
  const Tensor& p0 = lists.params[0];
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = lists.params[i];
    FUSED_RMSPROP_CHECK(p.defined(), "fused_rmsprop: params[", i, "] is undefined");
    FUSED_RMSPROP_CHECK(is_supported_param_dtype(p.scalar_type()),
        "fused_rmsprop: params[", i, "] has dtype ", p.scalar_type(),
        "; supported are float64, float32, float16 and bfloat16 "
        "(complex parameters are passed as torch.view_as_real views)");
    FUSED_RMSPROP_CHECK(p.scalar_type() == p0.scalar_type(),
        "fused_rmsprop: all params of one call must share a dtype; params[", i,
        "] is ", p.scalar_type(), " but params[0] is ", p0.scalar_type());
    FUSED_RMSPROP_CHECK(p.layout() == Layout::Strided && is_non_overlapping_and_dense(p),
        "fused_rmsprop: params[", i, "] must be dense and non-overlapping "
        "(a contiguous or permuted tensor, not a strided view); got sizes ",
        to_string(p.sizes()), " strides ", to_string(p.strides()));
  }
  const auto param_dtype = p0.scalar_type();
  const auto sdt = lists.square_avgs.empty() ? param_dtype
                                             : lists.square_avgs[0].scalar_type();
  const bool half_param = param_dtype == kHalf || param_dtype == kBFloat16;
  if (lists.quantized()) {
    FUSED_RMSPROP_CHECK(sdt == kByte,
        "fused_rmsprop: with square_avg_scales (8-bit state) the state must be uint8 "
        "codes; square_avgs[0] has dtype ", sdt);
  } else {
    FUSED_RMSPROP_CHECK(sdt == param_dtype || (half_param && sdt == kFloat),
        "fused_rmsprop: state dtype ", sdt, " does not fit params of dtype ",
        param_dtype, "; state must have the param dtype, or float32 for "
        "float16/bfloat16 params", sdt == kByte ? " (uint8 codes of 8-bit state "
        "need square_avg_scales)" : "");
  }
  FUSED_RMSPROP_CHECK(lists.quantized() || (lists.momentum_buffer_scales.empty() &&
                                    lists.grad_avg_scales.empty()),
      "fused_rmsprop: momentum_buffer_scales and grad_avg_scales need square_avg_scales "
      "(the state is 8-bit as a whole or not at all)");
  if (lists.quantized()) {
    check_scales("square_avg_scales", lists.square_avg_scales, true, lists);
    check_scales("momentum_buffer_scales", lists.momentum_buffer_scales,
                 lists.has_momentum(), lists);
    check_scales("grad_avg_scales", lists.grad_avg_scales, lists.centered(), lists);
  }

  check_list("params", lists.params, lists, false, sdt);
  check_list("grads", lists.grads, lists, false, sdt);
  check_list("square_avgs", lists.square_avgs, lists, true, sdt);
  if (lists.has_momentum()) {
    check_list("momentum_buffers", lists.momentum_buffers, lists, true, sdt);
  }
  if (lists.centered()) {
    check_list("grad_avgs", lists.grad_avgs, lists, true, sdt);
  }
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"grad_scale", lists.grad_scale},
                                {"found_inf", lists.found_inf}}) {
    FUSED_RMSPROP_CHECK(!t.defined() || (t.numel() == 1 && t.scalar_type() == kFloat &&
                                 t.layout() == Layout::Strided && t.device() == p0.device()),
        "fused_rmsprop: ", name, " must be a one-element float32 tensor on ",
        to_string(p0.device()));
  }
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"lr_tensor", lists.lr_tensor},
                                {"grad_factor", lists.grad_factor}}) {
    FUSED_RMSPROP_CHECK(!t.defined() || (t.numel() == 1 && t.layout() == Layout::Strided &&
                                 (t.scalar_type() == kFloat || t.scalar_type() == kDouble) &&
                                 t.device() == p0.device()),
        "fused_rmsprop: ", name, " must be a one-element float32 or float64 tensor on ",
        to_string(p0.device()));
  }
  FUSED_RMSPROP_CHECK(lists.state_steps.empty() || lists.state_steps.size() == n,
      "fused_rmsprop: state_steps has ", lists.state_steps.size(),
      " tensors but params has ", n, " (pass one per param, or none)");
  for (size_t i = 0; i < lists.state_steps.size(); ++i) {
    const Tensor& s = lists.state_steps[i];
    FUSED_RMSPROP_CHECK(s.defined() && s.numel() == 1 && s.layout() == Layout::Strided &&
        (s.scalar_type() == kFloat || s.scalar_type() == kDouble) &&
        (s.is_cpu() || s.device() == p0.device()),
        "fused_rmsprop: state_steps[", i, "] must be a one-element float32 or "
        "float64 tensor on the CPU or on ", to_string(p0.device()));
  }
  if (lists.stochastic_rounding()) {
    check_rounding_args(lists);
  }
}

}  // namespace fused_rmsprop
