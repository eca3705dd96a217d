// Turns the run-time dtypes and features of a checked call into the
// compile-time types the kernels are instantiated for. Shared by every device
// so that each supports exactly the same combinations.
#pragma once

#include <type_traits>

#include "op_args.h"

namespace fused_rmsprop {

// T: param and grad dtype; S: state dtype (T, or float for half types, or
// uint8_t for 8-bit state);
// kMomentum / kCentered: which optional state exists; kStochastic: bfloat16
// values are stored with stochastic rounding (only ever set for bfloat16
// params, so other dtypes compile one variant).
template <typename T_, typename S_, bool kMomentum_, bool kCentered_, bool kStochastic_ = false>
struct KernelTag {
  using T = T_;
  using S = S_;
  static constexpr bool kMomentum = kMomentum_;
  static constexpr bool kCentered = kCentered_;
  static constexpr bool kStochastic = kStochastic_;
};

template <typename T, typename S, bool kStochastic, typename F>
void dispatch_features(const TensorLists& lists, const F& f) {
  if (lists.has_momentum()) {
    if (lists.centered()) {
      f(KernelTag<T, S, true, true, kStochastic>{});
    } else {
      f(KernelTag<T, S, true, false, kStochastic>{});
    }
  } else if (lists.centered()) {
    f(KernelTag<T, S, false, true, kStochastic>{});
  } else {
    f(KernelTag<T, S, false, false, kStochastic>{});
  }
}

template <typename T, typename S, typename F>
void dispatch_rounding(const TensorLists& lists, const F& f) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    if (lists.stochastic_rounding()) {
      dispatch_features<T, S, true>(lists, f);
      return;
    }
  }
  dispatch_features<T, S, false>(lists, f);
}

template <typename T, typename F>
void dispatch_state(const TensorLists& lists, const F& f) {
  if (lists.quantized()) {  // 8-bit state: uint8 codes (NOTE: [8-bit state codes])
    dispatch_rounding<T, uint8_t>(lists, f);
    return;
  }
  if constexpr (std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>) {
    if (dtype_of(lists.square_avgs[0]) == kFloat) {
      dispatch_rounding<T, float>(lists, f);
      return;
    }
  }
  dispatch_rounding<T, T>(lists, f);
}

// Calls f(KernelTag<...>{}) for the lists' dtypes and features. The lists
// must have passed check_rmsprop_args and be non-empty.
template <typename F>
void dispatch_rmsprop(const TensorLists& lists, const F& f) {
  switch (dtype_of(lists.params[0])) {
    case kDouble: return dispatch_state<double>(lists, f);
    case kFloat: return dispatch_state<float>(lists, f);
    case kHalf: return dispatch_state<c10::Half>(lists, f);
    case kBFloat16: return dispatch_state<c10::BFloat16>(lists, f);
    default:
      FUSED_RMSPROP_CHECK(false, "fused_rmsprop: internal error: unchecked params dtype ",
                          dtype_of(lists.params[0]));
  }
}

}  // namespace fused_rmsprop
