#include "grad_norm.h"

#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/stack.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

namespace fused_rmsprop {

void check_grad_norm_args(at::TensorList grads, double norm_type) {
  TORCH_CHECK(norm_type > 0, "fused_rmsprop.grad_norm: norm_type must be > 0 (or inf), got ",
              norm_type);
  TORCH_CHECK(!grads.empty(), "fused_rmsprop.grad_norm: grads is empty");
  const at::Tensor& g0 = grads[0];
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& g = grads[i];
    TORCH_CHECK(g.defined() && g.layout() == at::kStrided && g.is_non_overlapping_and_dense(),
        "fused_rmsprop.grad_norm: grads[", i, "] must be a dense (strided, non-overlapping) tensor");
    TORCH_CHECK(g.scalar_type() == g0.scalar_type() && g.device() == g0.device(),
        "fused_rmsprop.grad_norm: all grads must share a dtype and device; grads[", i, "] is ",
        g.scalar_type(), " on ", g.device(), ", grads[0] is ", g0.scalar_type(), " on ",
        g0.device());
    const auto t = g.scalar_type();
    TORCH_CHECK(t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16,
        "fused_rmsprop.grad_norm: grads[", i, "] has dtype ", t,
        "; supported are float64, float32, float16 and bfloat16");
  }
}

at::ScalarType grad_norm_dtype(at::TensorList grads) {
  return grads[0].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor grad_norm_foreach(at::TensorList grads, double norm_type) {
  check_grad_norm_args(grads, norm_type);
  const auto norms = at::_foreach_norm(grads, norm_type, grad_norm_dtype(grads));
  return at::linalg_vector_norm(at::stack(norms), norm_type);
}

#if defined(FUSED_RMSPROP_WITH_CUDA)
TORCH_LIBRARY_IMPL(fused_rmsprop, CUDA, m) {
  m.impl("grad_norm", &grad_norm_foreach);
}
#endif

}  // namespace fused_rmsprop
