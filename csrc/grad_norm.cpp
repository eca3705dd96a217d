#include "grad_norm.h"

#include <array>
#include <vector>

namespace fused_rmsprop {

void check_grad_norm_args(TensorList grads, double norm_type) {
  FUSED_RMSPROP_CHECK(norm_type > 0, "fused_rmsprop.grad_norm: norm_type must be > 0 (or inf), got ",
              norm_type);
  FUSED_RMSPROP_CHECK(!grads.empty(), "fused_rmsprop.grad_norm: grads is empty");
  const TensorRef& g0 = grads[0];
  for (size_t i = 0; i < grads.size(); ++i) {
    const TensorRef& g = grads[i];
    FUSED_RMSPROP_CHECK(g.defined() && is_strided(g) && is_non_overlapping_and_dense(g),
        "fused_rmsprop.grad_norm: grads[", i, "] must be a dense (strided, non-overlapping) tensor");
    FUSED_RMSPROP_CHECK(dtype_of(g) == dtype_of(g0) && device_of(g) == device_of(g0),
        "fused_rmsprop.grad_norm: all grads must share a dtype and device; grads[", i, "] is ",
        dtype_of(g), " on ", to_string(device_of(g)), ", grads[0] is ", dtype_of(g0),
        " on ", to_string(device_of(g0)));
    const auto t = dtype_of(g);
    FUSED_RMSPROP_CHECK(t == kDouble || t == kFloat || t == kHalf || t == kBFloat16,
        "fused_rmsprop.grad_norm: grads[", i, "] has dtype ", t,
        "; supported are float64, float32, float16 and bfloat16");
  }
}

ScalarType grad_norm_dtype(TensorList grads) {
  return dtype_of(grads[0]) == kDouble ? kDouble : kFloat;
}

#if defined(FUSED_RMSPROP_WITH_CUDA)
namespace {

// On a GPU: the checks here, then torch's multi-tensor _foreach_norm and the
// norm of the per-tensor norms, in Python (fused_rmsprop/_ops.py registers
// _foreach_grad_norm): those ATen ops take a Scalar, which the stable
// dispatcher cannot pass (NOTE: [stable ABI]).
Tensor grad_norm_cuda(const std::vector<Tensor>& grads, double norm_type) {
  const std::vector<TensorRef> refs(grads.begin(), grads.end());
  check_grad_norm_args(refs, norm_type);
  std::array<StableIValue, 2> stack{
      torch::stable::detail::from(grads),
      torch::stable::detail::from(norm_type)};
  TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("fused_rmsprop::_foreach_grad_norm", "",
                                               stack.data(), TORCH_ABI_VERSION));
  return torch::stable::detail::to<Tensor>(stack[0]);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fused_rmsprop, CUDA, m) {
  m.impl("grad_norm", TORCH_BOX(&grad_norm_cuda));
}
#endif

}  // namespace fused_rmsprop
