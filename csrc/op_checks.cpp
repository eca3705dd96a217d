#include "op_checks.h"

#include "quantized_state.h"

#include <utility>
#include <vector>

namespace fused_rmsprop {
namespace {

bool is_supported_param_dtype(ScalarType t) {
  return t == kFloat || t == kDouble || t == kHalf ||
      t == kBFloat16;
}

// What the list checks read of a tensor, read once: each field is a call
// into torch's shim, and a call of 200 parameters checks about 1000 tensors.
struct Meta {
  bool defined = false;
  bool strided = false;
  ScalarType dtype = kFloat;
  Device device{DeviceType::CPU};
  IntList sizes;
  IntList strides;
};

Meta meta_of(const TensorRef& t) {
  Meta m;
  m.defined = t.defined();
  if (m.defined) {
    m.strided = is_strided(t);
    m.dtype = dtype_of(t);
    m.device = device_of(t);
    if (m.strided) {
      m.sizes = t.sizes();
      m.strides = t.strides();
    }
  }
  return m;
}

// Two tensors of one shape share a memory layout when every dimension of
// size > 1 has the same stride (strides of size-1 dims never matter).
bool same_layout(const Meta& a, const Meta& b) {
  for (size_t d = 0; d < a.sizes.size(); ++d) {
    if (a.sizes[d] > 1 && a.strides[d] != b.strides[d]) {
      return false;
    }
  }
  return true;
}

// One list of tensors laid out like the params (params[i]'s Meta is
// params[i]): state of dtype `state_dtype` when is_state, else the params'.
void check_list(const char* name, TensorList list, const std::vector<Meta>& params,
                bool is_state, ScalarType state_dtype) {
  const auto n = params.size();
  FUSED_RMSPROP_CHECK(
      list.size() == n,
      "fused_rmsprop: ", name, " has ", list.size(),
      " tensors but params has ", n);
  for (size_t i = 0; i < n; ++i) {
    const Meta& p = params[i];
    const Meta t = meta_of(list[i]);
    FUSED_RMSPROP_CHECK(
        t.defined, "fused_rmsprop: ", name, "[", i, "] is undefined");
    FUSED_RMSPROP_CHECK(
        t.strided,
        "fused_rmsprop: ", name, "[", i, "] must be a dense (strided) tensor, got ",
        to_string(list[i].layout()), " (sparse gradients are not supported)");
    FUSED_RMSPROP_CHECK(
        t.device == params[0].device,
        "fused_rmsprop: all tensors must be on one device; ", name, "[", i,
        "] is on ", to_string(t.device), " but params[0] is on ", to_string(params[0].device));
    FUSED_RMSPROP_CHECK(
        t.sizes.equals(p.sizes),
        "fused_rmsprop: ", name, "[", i, "] has shape ", to_string(t.sizes),
        " but params[", i, "] has shape ", to_string(p.sizes));
    const auto want = is_state ? state_dtype : p.dtype;
    FUSED_RMSPROP_CHECK(
        t.dtype == want,
        "fused_rmsprop: ", name, "[", i, "] has dtype ", t.dtype, ", expected ", want);
    FUSED_RMSPROP_CHECK(
        is_non_overlapping_and_dense(t.sizes, t.strides) && same_layout(t, p),
        "fused_rmsprop: ", name, "[", i, "] must be dense and laid out in memory "
        "like params[", i, "] (same strides); got strides ", to_string(t.strides),
        " for params strides ", to_string(p.strides));
  }
}

// Stochastic rounding: the kernel reads each param's step counter (the
// generator's position) on the params' device, all in one dtype.
void check_rounding_args(const TensorLists& lists) {
  const auto n = lists.params.size();
  const TensorRef& p0 = lists.params[0];
  FUSED_RMSPROP_CHECK(lists.rounding_ids.size() == n,
      "fused_rmsprop: rounding_ids has ", lists.rounding_ids.size(),
      " ids but params has ", n, " (pass one per param, or none to round to nearest)");
  FUSED_RMSPROP_CHECK(dtype_of(p0) == kBFloat16,
      "fused_rmsprop: stochastic rounding (rounding_ids) is for bfloat16 params; params "
      "have dtype ", dtype_of(p0));
  FUSED_RMSPROP_CHECK(lists.state_steps.size() == n,
      "fused_rmsprop: stochastic rounding needs state_steps (one per param: the "
      "generator's position), got ", lists.state_steps.size(), " for ", n, " params");
  const auto step_dtype = dtype_of(lists.state_steps[0]);
  const Device device0 = device_of(p0);
  for (size_t i = 0; i < n; ++i) {
    const TensorRef& s = lists.state_steps[i];
    FUSED_RMSPROP_CHECK(device_of(s) == device0 && dtype_of(s) == step_dtype,
        "fused_rmsprop: with stochastic rounding, state_steps[", i, "] must be on ",
        to_string(device0), " with dtype ", step_dtype, " (as state_steps[0]); got ",
        to_string(device_of(s)), " and ", dtype_of(s));
  }
}

// 8-bit state: each param's scales of one state, a contiguous float32 tensor
// of one element per block of kQuantBlock elements (its last may be partial).
void check_scales(const char* name, TensorList list, bool wanted, const TensorLists& lists) {
  const auto n = lists.params.size();
  FUSED_RMSPROP_CHECK(list.size() == (wanted ? n : 0),
      "fused_rmsprop: ", name, " has ", list.size(), " tensors; expected ", wanted ? n : 0,
      " (one per param when its state list is given and the state is 8-bit, else none)");
  const Device device0 = list.empty() ? Device(DeviceType::CPU) : device_of(lists.params[0]);
  for (size_t i = 0; i < list.size(); ++i) {
    const TensorRef& t = list[i];
    const int64_t blocks = (lists.params[i].numel() + kQuantBlock - 1) / kQuantBlock;
    FUSED_RMSPROP_CHECK(t.defined() && is_strided(t) && dtype_of(t) == kFloat &&
        t.dim() == 1 && t.numel() == blocks && t.is_contiguous() &&
        device_of(t) == device0,
        "fused_rmsprop: ", name, "[", i, "] must be a contiguous 1-D float32 tensor of ",
        blocks, " elements (one per block of ", kQuantBlock, " elements of params[", i,
        "]) on ", to_string(device0), "; got ",
        t.defined() ? to_string(t.sizes()) : "[]", ", ",
        t.defined() ? dtype_of(t) : kFloat, ", ",
        to_string(t.defined() ? device_of(t) : Device(DeviceType::CPU)));
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
  const TensorRef& p0 = lists.params[0];
  std::vector<Meta> params(n);
  for (size_t i = 0; i < n; ++i) {
    const Meta& p = params[i] = meta_of(lists.params[i]);
    FUSED_RMSPROP_CHECK(p.defined, "fused_rmsprop: params[", i, "] is undefined");
    FUSED_RMSPROP_CHECK(is_supported_param_dtype(p.dtype),
        "fused_rmsprop: params[", i, "] has dtype ", p.dtype,
        "; supported are float64, float32, float16 and bfloat16 "
        "(complex parameters are passed as torch.view_as_real views)");
    FUSED_RMSPROP_CHECK(p.dtype == params[0].dtype,
        "fused_rmsprop: all params of one call must share a dtype; params[", i,
        "] is ", p.dtype, " but params[0] is ", params[0].dtype);
    FUSED_RMSPROP_CHECK(p.strided && is_non_overlapping_and_dense(p.sizes, p.strides),
        "fused_rmsprop: params[", i, "] must be dense and non-overlapping "
        "(a contiguous or permuted tensor, not a strided view); got sizes ",
        to_string(p.sizes), " strides ", to_string(p.strides));
    FUSED_RMSPROP_CHECK(p.device == params[0].device,
        "fused_rmsprop: all tensors must be on one device; params[", i,
        "] is on ", to_string(p.device), " but params[0] is on ", to_string(params[0].device));
  }
  const auto param_dtype = params[0].dtype;
  const auto sdt = lists.square_avgs.empty() ? param_dtype
                                             : dtype_of(lists.square_avgs[0]);
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

  check_list("grads", lists.grads, params, false, sdt);
  check_list("square_avgs", lists.square_avgs, params, true, sdt);
  if (lists.has_momentum()) {
    check_list("momentum_buffers", lists.momentum_buffers, params, true, sdt);
  }
  if (lists.centered()) {
    check_list("grad_avgs", lists.grad_avgs, params, true, sdt);
  }
  for (const auto& [name, t] : {std::pair<const char*, const TensorRef&>{"grad_scale", lists.grad_scale},
                                {"found_inf", lists.found_inf}}) {
    FUSED_RMSPROP_CHECK(!t.defined() || (t.numel() == 1 && dtype_of(t) == kFloat &&
                                 is_strided(t) && device_of(t) == params[0].device),
        "fused_rmsprop: ", name, " must be a one-element float32 tensor on ",
        to_string(params[0].device));
  }
  for (const auto& [name, t] : {std::pair<const char*, const TensorRef&>{"lr_tensor", lists.lr_tensor},
                                {"grad_factor", lists.grad_factor}}) {
    FUSED_RMSPROP_CHECK(!t.defined() || (t.numel() == 1 && is_strided(t) &&
                                 (dtype_of(t) == kFloat || dtype_of(t) == kDouble) &&
                                 device_of(t) == params[0].device),
        "fused_rmsprop: ", name, " must be a one-element float32 or float64 tensor on ",
        to_string(params[0].device));
  }
  FUSED_RMSPROP_CHECK(lists.state_steps.empty() || lists.state_steps.size() == n,
      "fused_rmsprop: state_steps has ", lists.state_steps.size(),
      " tensors but params has ", n, " (pass one per param, or none)");
  for (size_t i = 0; i < lists.state_steps.size(); ++i) {
    const TensorRef& s = lists.state_steps[i];
    FUSED_RMSPROP_CHECK(s.defined() && s.numel() == 1 && is_strided(s) &&
        (dtype_of(s) == kFloat || dtype_of(s) == kDouble) &&
        (s.is_cpu() || device_of(s) == params[0].device),
        "fused_rmsprop: state_steps[", i, "] must be a one-element float32 or "
        "float64 tensor on the CPU or on ", to_string(params[0].device));
  }
  if (lists.stochastic_rounding()) {
    check_rounding_args(lists);
  }
}

}  // namespace fused_rmsprop
