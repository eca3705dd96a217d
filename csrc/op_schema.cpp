// The op's schema, registered once; each device registers its kernel in its
// own file (cpu/rmsprop_cpu.cpp, cuda/rmsprop_cuda.cu).
#include <Python.h>
#include <torch/library.h>

// NOTE: [schema] One mutating op per device/dtype group of tensors, in the
// style of aten::_fused_adagrad_. Features that are off pass empty lists:
// momentum_buffers is empty when momentum == 0, grad_avgs when not centered.
// The gradients are read only. The step counters are not part of the op: the
// RMSprop update does not use them, so the optimizer advances them itself.
TORCH_LIBRARY(fused_rmsprop, m) {
  m.def(
      "rmsprop_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] square_avgs, "
      "Tensor(c!)[] momentum_buffers, Tensor(d!)[] grad_avgs, *, float lr, "
      "float alpha, float eps, float weight_decay, float momentum, "
      "bool maximize, bool eps_in_sqrt=False, bool lr_in_momentum=False, "
      "bool decoupled_weight_decay=False) -> ()");
}

// `import fused_rmsprop._C` loads this library, which runs the registrations
// above; the module itself exposes nothing else.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "fused_rmsprop native ops", -1, nullptr};
  return PyModule_Create(&module_def);
}
