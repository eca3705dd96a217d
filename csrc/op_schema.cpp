// The ops' schemas, registered once; each device registers its kernel in its
// own file (cpu/rmsprop_cpu.cpp, cuda/rmsprop_cuda.cu).
#include <Python.h>

#include "op_entry.h"

STABLE_TORCH_LIBRARY(fused_rmsprop, m) {
  // NOTE: [argument table] in op_args.h: the arguments and what they mean.
  m.def(fused_rmsprop::op_schema("rmsprop_", /*updates=*/true).c_str());
  // The same arguments, checked as rmsprop_ checks them, and nothing changed:
  // the optimizer checks every call of a step before it runs any.
  m.def(fused_rmsprop::op_schema("rmsprop_check", /*updates=*/false).c_str());
  // The norm of all of `grads` as one vector (float32; float64 for float64
  // grads), for clipping: csrc/grad_norm.h.
  m.def("grad_norm(Tensor[] grads, float norm_type) -> Tensor");
  // grad_norm's computation on a GPU, after its checks: registered in Python
  // (fused_rmsprop/_ops.py; NOTE: [stable ABI] in torch_api.h says why).
  m.def("_foreach_grad_norm(Tensor[] grads, float norm_type) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(fused_rmsprop, CompositeExplicitAutograd, m) {
  m.impl("rmsprop_check", &fused_rmsprop::rmsprop_boxed<nullptr>);
}

// `import fused_rmsprop._C` loads this library, which runs the registrations
// above; the module itself exposes nothing else. Only Python's limited API is
// used (the library is tagged abi3: one build for every Python >= 3.10).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "fused_rmsprop native ops", -1, nullptr};
  return PyModule_Create(&module_def);
}
