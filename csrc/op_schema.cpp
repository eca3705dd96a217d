// The op's schema, registered once; each device registers its kernel in its
// own file (cpu/rmsprop_cpu.cpp, cuda/rmsprop_cuda.cu).
#include <Python.h>
#include <torch/library.h>

#include "op_checks.h"

// NOTE: [schema] One mutating op per device/dtype group of tensors, in the
// style of aten::_fused_adagrad_. Features that are off pass empty lists:
// momentum_buffers is empty when momentum == 0, grad_avgs when not centered.
// The gradients are read only. The step counters (state_steps) are advanced
// by the op too (NOTE: [step counters] in op_checks.h): the update
// itself does not read them, but one call that adds 1 to every CPU counter
// costs nothing, where a foreach op over hundreds of CPU scalars costs more
// than the update of small models. Pass an empty list to leave them alone.
//
// grad_scale and found_inf follow GradScaler's protocol for fused optimizers
// (as aten::_fused_adam_): gradients are unscaled inside the kernel, and a
// non-zero found_inf leaves params, state and step counters untouched.
//
// lr_tensor, when given, replaces lr: the kernel reads it from device memory,
// so a captured CUDA graph follows a Tensor learning rate without host syncs.
//
// grad_factor, when given, multiplies every gradient after unscaling: the
// gradient-clipping coefficient min(1, max_norm / (norm + 1e-6)), computed
// on the device, so clipping costs no pass over the gradients of its own.
//
// rounding_ids, when not empty, gives each param an id (its index in the
// optimizer) and turns on stochastic rounding of every bfloat16 value the
// kernel stores, from a generator keyed on (rounding_seed, id, the param's
// step counter, element index): NOTE: [rounding generator].
//
// square_avg_scales, momentum_buffer_scales and grad_avg_scales, when given,
// make the state 8-bit: the state lists hold uint8 codes and these the
// float32 scale of each block of 128 elements (NOTE: [8-bit state codes]).
//
// rmsprop_check takes the same arguments, checks them as rmsprop_ does, and
// changes nothing: the optimizer checks every group before updating any.
#define FUSED_RMSPROP_ARGS(mut_a, mut_b, mut_c, mut_d, mut_e, mut_f, mut_g, mut_h) \
  "(Tensor" mut_a "[] params, Tensor[] grads, Tensor" mut_b "[] square_avgs, " \
  "Tensor" mut_c "[] momentum_buffers, Tensor" mut_d "[] grad_avgs, "          \
  "Tensor" mut_e "[] state_steps, *, float lr, float alpha, float eps, "        \
  "float weight_decay, float momentum, bool maximize, bool eps_in_sqrt=False, " \
  "bool lr_in_momentum=False, bool decoupled_weight_decay=False, "              \
  "Tensor? grad_scale=None, Tensor? found_inf=None, Tensor? lr_tensor=None, "        \
  "Tensor? grad_factor=None, int[] rounding_ids=[], int rounding_seed=0, "       \
  "Tensor" mut_f "[]? square_avg_scales=None, "                                \
  "Tensor" mut_g "[]? momentum_buffer_scales=None, "                           \
  "Tensor" mut_h "[]? grad_avg_scales=None) -> ()"

TORCH_LIBRARY(fused_rmsprop, m) {
  m.def("rmsprop_" FUSED_RMSPROP_ARGS("(a!)", "(b!)", "(c!)", "(d!)", "(e!)", "(f!)", "(g!)", "(h!)"));
  m.def("rmsprop_check" FUSED_RMSPROP_ARGS("", "", "", "", "", "", "", ""));
  // The norm of all of `grads` as one vector (float32; float64 for float64
  // grads), for clipping: csrc/grad_norm.h.
  m.def("grad_norm(Tensor[] grads, float norm_type) -> Tensor");
}

TORCH_LIBRARY_IMPL(fused_rmsprop, CompositeExplicitAutograd, m) {
  m.impl("rmsprop_check", &fused_rmsprop::rmsprop_entry<nullptr>);
}

// `import fused_rmsprop._C` loads this library, which runs the registrations
// above; the module itself exposes nothing else.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "fused_rmsprop native ops", -1, nullptr};
  return PyModule_Create(&module_def);
}
