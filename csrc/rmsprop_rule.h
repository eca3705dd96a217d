// The RMSprop update rule, written once.
//
// Every element loop of this project (the CPU kernel's, compiled per ISA, for
// full-precision and for 8-bit state; the CUDA kernel's two chunk functors;
// and the host-emulation build of those) loads its elements into
// `opmath_t<T>`, calls `rmsprop_update` below, and stores the results
// back: the state's form is a load/store policy around this one rule. Nothing
// else in the project computes an RMSprop step.
#pragma once

#include <torch/headeronly/macros/Macros.h>

#include <cmath>

#include "opmath.h"

namespace fused_rmsprop {

// Hyperparameters as the op receives them (double, like Python floats).
struct RMSpropOptions {
  double lr;
  double alpha;
  double eps;
  double weight_decay;
  double momentum;
  bool maximize;
  bool eps_in_sqrt;
  bool lr_in_momentum;
  bool decoupled_weight_decay;
};

// 1 / scale as GradScaler computes it (in double, then rounded), so that the
// unscaled gradient equals the one torch.optim.RMSprop sees under the scaler.
template <typename M>
C10_HOST_DEVICE inline M inverse_grad_scale(float scale) {
  return static_cast<M>(static_cast<float>(1.0 / static_cast<double>(scale)));
}

// The same hyperparameters folded into the constants the element loop uses,
// in opmath precision. Folding the switches into constants keeps the loop
// free of branches that differ between conventions:
//   eps placement:   d = sqrt(v + eps_inside) + eps_outside, one of them 0;
//   lr placement:    b = mu * b + buf_scale * (g / d), p += param_step * b.
// Adding 0 or multiplying by 1 is exact in IEEE arithmetic, so the folded form
// gives the same bits as the branchy one.
template <typename M>
struct RMSpropConstants {
  M grad_sign;          // -1 when maximizing
  // 1, times 1 / GradScaler's scale (AMP), times the clipping coefficient
  // (grad_factor): set by the kernel from device scalars.
  M grad_multiplier;
  M weight_decay;       // coupled L2 term, 0 when off or decoupled
  M decay_factor;       // decoupled: 1 - lr * wd, else 1
  M alpha;
  M one_minus_alpha;
  M eps_inside;
  M eps_outside;
  M momentum;
  M buf_scale;   // lr if lr_in_momentum, else 1
  M param_step;  // -1 if lr_in_momentum, else -lr (only with momentum)
  M neg_lr;      // -lr (without momentum)

  RMSpropConstants() = default;

  C10_HOST_DEVICE explicit RMSpropConstants(const RMSpropOptions& o)
      : grad_sign(o.maximize ? M(-1) : M(1)),
        grad_multiplier(M(1)),
        weight_decay(o.decoupled_weight_decay ? M(0) : M(o.weight_decay)),
        decay_factor(o.decoupled_weight_decay ? M(1.0 - o.lr * o.weight_decay)
                                              : M(1)),
        alpha(M(o.alpha)),
        one_minus_alpha(M(1.0 - o.alpha)),
        eps_inside(o.eps_in_sqrt ? M(o.eps) : M(0)),
        eps_outside(o.eps_in_sqrt ? M(0) : M(o.eps)),
        momentum(M(o.momentum)),
        buf_scale(o.lr_in_momentum ? M(o.lr) : M(1)),
        param_step(o.lr_in_momentum ? M(-1) : M(-o.lr)),
        neg_lr(M(-o.lr)) {}
};

// One element of one step. `p`, `v` (square_avg), `b` (momentum_buffer) and
// `gbar` (grad_avg) are read and written; `g` is the gradient. kMomentum and
// kCentered select which state exists, so the plain step does no extra work.
//
// The order of operations follows torch.optim.RMSprop's single-tensor path
// (mul_ then addcmul_, lerp_, addcdiv_), so float32/float64 results agree
// with torch up to rounding of fused multiply-adds.
template <bool kMomentum, bool kCentered, typename M>
C10_HOST_DEVICE C10_ALWAYS_INLINE void rmsprop_update(
    M& p, M g, M& v, M& b, M& gbar, const RMSpropConstants<M>& c) {
  // Unscale as GradScaler.unscale_ does (g * inv_scale), then maximize.
  g = g * c.grad_multiplier * c.grad_sign;
  if (c.weight_decay != M(0)) {
    g = g + c.weight_decay * p;
  }
  p = p * c.decay_factor;
  v = v * c.alpha + c.one_minus_alpha * g * g;
  M var = v;
  if constexpr (kCentered) {
    // torch.lerp(gbar, g, w) with w = 1 - alpha, in the form torch uses for
    // w < 0.5 (alpha > 0.5, every practical alpha); one form keeps the loop
    // free of branches.
    gbar = gbar + c.one_minus_alpha * (g - gbar);
    var = v - gbar * gbar;
    // NOTE: [variance clamp] v - gbar^2 is a variance and mathematically
    // >= 0, but rounding can take it just below 0, where sqrt gives NaN
    // (torch does produce NaN there). Clamp at 0 instead.
    var = var > M(0) ? var : M(0);
  }
  const M d = std::sqrt(var + c.eps_inside) + c.eps_outside;
  if constexpr (kMomentum) {
    b = b * c.momentum + c.buf_scale * (g / d);
    p = p + c.param_step * b;
  } else {
    p = p + c.neg_lr * g / d;
  }
}

}  // namespace fused_rmsprop
