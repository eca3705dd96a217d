// Test-only: the CUDA kernel source (cuda/rmsprop_kernel.h and
// cuda/multi_tensor_apply.h, the very files nvcc compiles) built as C++ for
// the CPU, with every block and thread of each launch run in turn. Registered
// as fused_rmsprop_emulation::rmsprop_ on CPU tensors, with the same schema as
// the real op plus the chunk size and the launch layout (4 KB or 32 KB of
// kernel arguments), so tests can cross chunk and launch boundaries with
// small tensors.
#define FUSED_RMSPROP_EMULATION 1

#include <Python.h>

#include <array>
#include <vector>

#include "../cuda/rmsprop_kernel.h"
#include "../cuda/step_counter_kernel.h"
#include "../dispatch.h"
#include "../op_entry.h"
// The argument checks, step counters and torch helpers, compiled into this
// library too (it stands alone).
#include "../op_args.cpp"
#include "../op_checks.cpp"
#include "../step_counters.cpp"
#include "../torch_api.cpp"

namespace fused_rmsprop {
namespace {

// The chunk sizes the emulation offers: the real one, and a small one that
// lets a test fill a launch (2240 or 320 blocks) with few elements.
constexpr int64_t kSmallChunk = 512;

int64_t g_launches = 0;  // launches made by the last call, for the tests

template <int64_t kChunk, int kArgBytes>
void rmsprop_emulated(const TensorLists& lists, const RMSpropOptions& opts) {
  dispatch_rmsprop(lists, [&](auto tag) {
    run_multi_tensor<decltype(tag), kChunk, kArgBytes>(
        lists, opts, [](auto kernel, int blocks, int threads, const auto&... args) {
          ++g_launches;
          emulated_launch(blocks, threads, kernel, args...);
        });
  });
}

// The step counters' kernel, run as the CUDA op runs it (not counted in
// last_launches, which counts the update's launches).
void advance_counters_emulated(TensorList counters, const TensorRef& found_inf) {
  advance_step_counters(counters, found_inf, [](auto kernel, int blocks, int threads,
                                                const auto& args) {
    emulated_launch(blocks, threads, kernel, args);
  });
}

int64_t last_launches() {
  return g_launches;
}

void check_launch_args(int64_t chunk_size, int64_t kernel_arg_bytes) {
  FUSED_RMSPROP_CHECK(chunk_size == kChunkSize || chunk_size == kSmallChunk,
      "fused_rmsprop_emulation: chunk_size must be ", kChunkSize, " or ",
      kSmallChunk, ", got ", chunk_size);
  FUSED_RMSPROP_CHECK(kernel_arg_bytes == kSmallArgBytes || kernel_arg_bytes == kLargeArgBytes,
      "fused_rmsprop_emulation: kernel_arg_bytes must be ", kSmallArgBytes, " or ",
      kLargeArgBytes, ", got ", kernel_arg_bytes);
}

RMSpropImpl emulated_impl(int64_t chunk_size, int64_t kernel_arg_bytes) {
  check_launch_args(chunk_size, kernel_arg_bytes);
  if (chunk_size == kChunkSize) {
    return kernel_arg_bytes == kLargeArgBytes ? &rmsprop_emulated<kChunkSize, kLargeArgBytes>
                                              : &rmsprop_emulated<kChunkSize, kSmallArgBytes>;
  }
  return kernel_arg_bytes == kLargeArgBytes ? &rmsprop_emulated<kSmallChunk, kLargeArgBytes>
                                            : &rmsprop_emulated<kSmallChunk, kSmallArgBytes>;
}

// The op's arguments (NOTE: [argument table]), then the launch layout.
// (boxed as every device's entry, op_entry.h).
void rmsprop_emulated_op(StableIValue* stack, uint64_t num_args, uint64_t num_outputs) {
  check_boxed_call(num_args, num_outputs, kTableArgs + 2);
  BorrowedArgs borrowed;
  TensorLists lists;
  RMSpropOptions opts{};
  unpack_args(stack, borrowed, lists, opts);
  const RMSpropImpl impl =
      emulated_impl(torch::stable::detail::to<int64_t>(stack[kTableArgs]),
                    torch::stable::detail::to<int64_t>(stack[kTableArgs + 1]));
  g_launches = 0;
  // As the CUDA op with its counters on the GPU (NOTE: [step counters]).
  run_checked(lists, opts, impl, &advance_counters_emulated, CounterPolicy::kDeviceForAll);
}

// The blocks of each launch the CUDA op makes for tensors of these sizes,
// from the same multi_tensor_apply, without running anything: `tensors` may
// be meta tensors (only their numel is read), so a plan for a 1e9-element
// model costs nothing.
template <int kDepth, int kArgBytes>
std::vector<int64_t> plan(TensorList tensors) {
  std::array<TensorList, kDepth> lists;
  lists.fill(tensors);
  std::vector<int64_t> blocks_per_launch;
  multi_tensor_apply<kDepth, kChunkSize, kArgBytes>(
      lists, [&](const auto&, int blocks) { blocks_per_launch.push_back(blocks); });
  return blocks_per_launch;
}

std::vector<int64_t> launch_plan(const std::vector<Tensor>& owned, int64_t depth,
                                 int64_t kernel_arg_bytes) {
  const std::vector<TensorRef> refs(owned.begin(), owned.end());
  const TensorList tensors(refs);
  check_launch_args(kChunkSize, kernel_arg_bytes);
  FUSED_RMSPROP_CHECK(depth >= 3 && depth <= 5,
      "fused_rmsprop_emulation: depth must be 3, 4 or 5 (tensors per parameter), got ", depth);
  const bool large = kernel_arg_bytes == kLargeArgBytes;
  switch (depth) {
    case 3: return large ? plan<3, kLargeArgBytes>(tensors) : plan<3, kSmallArgBytes>(tensors);
    case 4: return large ? plan<4, kLargeArgBytes>(tensors) : plan<4, kSmallArgBytes>(tensors);
    default: return large ? plan<5, kLargeArgBytes>(tensors) : plan<5, kSmallArgBytes>(tensors);
  }
}

}  // namespace

STABLE_TORCH_LIBRARY(fused_rmsprop_emulation, m) {
  m.def(op_schema("rmsprop_", /*updates=*/true,
                  ", int chunk_size=65536, int kernel_arg_bytes=32764").c_str());
  m.def("last_launches() -> int");
  m.def("launch_plan(Tensor[] tensors, int depth, int kernel_arg_bytes=32764) -> int[]");
}

STABLE_TORCH_LIBRARY_IMPL(fused_rmsprop_emulation, CPU, m) {
  m.impl("rmsprop_", &rmsprop_emulated_op);
}

STABLE_TORCH_LIBRARY_IMPL(fused_rmsprop_emulation, CompositeExplicitAutograd, m) {
  m.impl("last_launches", TORCH_BOX(&last_launches));
  m.impl("launch_plan", TORCH_BOX(&launch_plan));
}

}  // namespace fused_rmsprop

extern "C" PyObject* PyInit__C_emulation(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C_emulation", "fused_rmsprop CUDA kernel under host emulation", -1, nullptr};
  return PyModule_Create(&module_def);
}
