// Test-only: the CUDA kernel source (cuda/rmsprop_kernel.h and
// cuda/multi_tensor_apply.h, the very files nvcc compiles) built as C++ for
// the CPU, with every block and thread of each launch run in turn. Registered
// as fused_rmsprop_emulation::rmsprop_ on CPU tensors, with the same schema as
// the real op plus the chunk size, so tests can cross chunk and launch
// boundaries with small tensors.
#define FUSED_RMSPROP_EMULATION 1

#include <Python.h>
#include <torch/library.h>

#include "../cuda/rmsprop_kernel.h"
#include "../dispatch.h"
// The argument checks, compiled into this library too (it stands alone).
#include "../op_checks.cpp"

namespace fused_rmsprop {
namespace {

// The chunk sizes the emulation offers: the real one, and a small one that
// lets a test reach the 320-block launch limit with 320 * 512 elements.
constexpr int64_t kSmallChunk = 512;

int64_t g_launches = 0;  // launches made by the last call, for the tests

template <int64_t kChunk>
void rmsprop_emulated(const TensorLists& lists, const RMSpropOptions& opts) {
  dispatch_rmsprop(lists, [&](auto tag) {
    run_multi_tensor<decltype(tag), kChunk>(
        lists, opts, [](auto kernel, int blocks, const auto&... args) {
          ++g_launches;
          emulated_launch(blocks, kBlockSize, kernel, args...);
        });
  });
}

int64_t last_launches() {
  return g_launches;
}

void rmsprop_emulated_op(
    at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
    at::TensorList momentum_buffers, at::TensorList grad_avgs,
    at::TensorList state_steps, double lr,
    double alpha, double eps, double weight_decay, double momentum,
    bool maximize, bool eps_in_sqrt, bool lr_in_momentum,
    bool decoupled_weight_decay, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf, const std::optional<at::Tensor>& lr_tensor,
    int64_t chunk_size) {
  TORCH_CHECK(chunk_size == kChunkSize || chunk_size == kSmallChunk,
      "fused_rmsprop_emulation: chunk_size must be ", kChunkSize, " or ",
      kSmallChunk, ", got ", chunk_size);
  auto impl = chunk_size == kChunkSize ? &rmsprop_emulated<kChunkSize>
                                       : &rmsprop_emulated<kSmallChunk>;
  const TensorLists lists{params, grads, square_avgs, momentum_buffers, grad_avgs,
      state_steps, grad_scale.value_or(at::Tensor()), found_inf.value_or(at::Tensor()),
      lr_tensor.value_or(at::Tensor())};
  const RMSpropOptions opts{lr, alpha, eps, weight_decay, momentum, maximize,
      eps_in_sqrt, lr_in_momentum, decoupled_weight_decay};
  g_launches = 0;
  run_checked(lists, opts, impl);
}

}  // namespace

TORCH_LIBRARY(fused_rmsprop_emulation, m) {
  m.def(
      "rmsprop_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] square_avgs, "
      "Tensor(c!)[] momentum_buffers, Tensor(d!)[] grad_avgs, "
      "Tensor(e!)[] state_steps, *, float lr, "
      "float alpha, float eps, float weight_decay, float momentum, "
      "bool maximize, bool eps_in_sqrt=False, bool lr_in_momentum=False, "
      "bool decoupled_weight_decay=False, Tensor? grad_scale=None, "
      "Tensor? found_inf=None, Tensor? lr_tensor=None, int chunk_size=65536) -> ()");
  m.impl("rmsprop_", c10::DispatchKey::CPU, &rmsprop_emulated_op);
  m.def("last_launches() -> int", &last_launches);
}

}  // namespace fused_rmsprop

extern "C" PyObject* PyInit__C_emulation(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C_emulation", "fused_rmsprop CUDA kernel under host emulation", -1, nullptr};
  return PyModule_Create(&module_def);
}
