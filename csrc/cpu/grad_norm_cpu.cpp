// The CPU kernel of fused_rmsprop::grad_norm: one pass over every gradient of
// the list, split over threads in blocks of a fixed size, so the result does
// not depend on the number of threads.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "convert.h"
#include "half_blocks.h"
#include "../grad_norm.h"

namespace fused_rmsprop {
namespace {

// NOTE: [norm blocks] The gradients are cut into blocks of kNormBlock
// elements (a tensor's last block may be shorter). Each block's partial
// (sum of |g|^p, or max |g|) is computed with kLanes independent
// accumulators in the opmath type (the compiler vectorizes them), and the
// blocks' partials are combined in float64, in block order. The blocks are
// the same for any thread count, so the result is too.
constexpr int64_t kNormBlock = 8192;
constexpr int kLanes = 16;

enum class NormKind { kOne, kTwo, kInf, kPow };

template <NormKind kKind, typename A>
inline A term(A x, A p) {
  const A a = std::abs(x);
  if constexpr (kKind == NormKind::kTwo) {
    return x * x;
  } else if constexpr (kKind == NormKind::kPow) {
    return std::pow(a, p);
  } else {
    return a;
  }
}

// max that propagates NaN, as torch's inf-norm does
template <typename A>
inline A nan_max(A m, A a) {
  return (a > m || a != a) ? a : m;
}

template <NormKind kKind, typename A>
double block_partial(const A* x, int64_t n, A p) {
  A acc[kLanes];
  for (int k = 0; k < kLanes; ++k) acc[k] = A(0);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const A t = term<kKind>(x[i + k], p);
      acc[k] = kKind == NormKind::kInf ? nan_max(acc[k], t) : acc[k] + t;
    }
  }
  for (int k = 0; i < n; ++i, ++k) {
    const A t = term<kKind>(x[i], p);
    acc[k] = kKind == NormKind::kInf ? nan_max(acc[k], t) : acc[k] + t;
  }
  double total = 0.0;
  for (int k = 0; k < kLanes; ++k) {
    total = kKind == NormKind::kInf ? nan_max(total, static_cast<double>(acc[k]))
                                    : total + static_cast<double>(acc[k]);
  }
  return total;
}

// The partial of x[0, n), converting half types to float32 in place-sized
// chunks first (bfloat16 by a shift, float16 with F16C where present).
template <NormKind kKind, typename T>
double partial(const T* x, int64_t n, double p) {
  using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
  if constexpr (std::is_same_v<T, A>) {
    return block_partial<kKind, A>(x, n, static_cast<A>(p));
  } else {
    alignas(64) float buf[kNormBlock];
    if constexpr (std::is_same_v<T, c10::Half>) {
      cpu::half_to_float(x, buf, n);
    } else {
      for (int64_t i = 0; i < n; ++i) buf[i] = cpu::load_as<float>(x[i]);
    }
    return block_partial<kKind, float>(buf, n, static_cast<float>(p));
  }
}

template <NormKind kKind, typename T>
double norm_of(TensorList grads, double p) {
  const int64_t n = static_cast<int64_t>(grads.size());
  std::vector<int64_t> block_start(n + 1, 0);
  for (int64_t t = 0; t < n; ++t) {
    block_start[t + 1] = block_start[t] + (grads[t].numel() + kNormBlock - 1) / kNormBlock;
  }
  const int64_t blocks = block_start[n];
  std::vector<double> partials(blocks, 0.0);
  // 4 blocks (32K elements) per task at least: waking the pool costs more below.
  torch::stable::parallel_for(0, blocks, 4, [&](int64_t begin, int64_t end) {
    int64_t t = std::upper_bound(block_start.begin(), block_start.end(), begin) -
        block_start.begin() - 1;
    for (int64_t b = begin; b < end; ++b) {
      while (b >= block_start[t + 1]) ++t;
      const T* x = static_cast<const T*>(grads[t].data_ptr());
      const int64_t first = (b - block_start[t]) * kNormBlock;
      const int64_t count = std::min(kNormBlock, grads[t].numel() - first);
      partials[b] = partial<kKind, T>(x + first, count, p);
    }
  });
  double total = 0.0;
  for (double x : partials) {
    total = kKind == NormKind::kInf ? nan_max(total, x) : total + x;
  }
  if constexpr (kKind == NormKind::kTwo) {
    return std::sqrt(total);
  } else if constexpr (kKind == NormKind::kPow) {
    return std::pow(total, 1.0 / p);
  } else {
    return total;
  }
}

template <typename T>
double norm_by_kind(TensorList grads, double norm_type) {
  if (std::isinf(norm_type)) {
    return norm_of<NormKind::kInf, T>(grads, norm_type);
  }
  if (norm_type == 2.0) {
    return norm_of<NormKind::kTwo, T>(grads, norm_type);
  }
  if (norm_type == 1.0) {
    return norm_of<NormKind::kOne, T>(grads, norm_type);
  }
  return norm_of<NormKind::kPow, T>(grads, norm_type);
}

Tensor grad_norm_cpu(const std::vector<Tensor>& tensors, double norm_type) {
  const std::vector<TensorRef> refs(tensors.begin(), tensors.end());
  const TensorList grads(refs);
  check_grad_norm_args(grads, norm_type);
  double value = 0.0;
  switch (dtype_of(grads[0])) {
    case kDouble: value = norm_by_kind<double>(grads, norm_type); break;
    case kFloat: value = norm_by_kind<float>(grads, norm_type); break;
    case kHalf: value = norm_by_kind<c10::Half>(grads, norm_type); break;
    default: value = norm_by_kind<c10::BFloat16>(grads, norm_type); break;  // checked
  }
  const ScalarType dtype = grad_norm_dtype(grads);
  Tensor result = torch::stable::empty({}, dtype, std::nullopt, Device(DeviceType::CPU));
  if (dtype == kDouble) {
    *static_cast<double*>(result.data_ptr()) = value;
  } else {
    *static_cast<float*>(result.data_ptr()) = static_cast<float>(value);
  }
  return result;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fused_rmsprop, CPU, m) {
  m.impl("grad_norm", TORCH_BOX(&grad_norm_cpu));
}

}  // namespace fused_rmsprop
