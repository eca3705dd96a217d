// Everything this project takes from torch, and all of it from LibTorch's
// stable ABI: the stable C shim behind torch/csrc/stable/*.h and the
// header-only torch/headeronly/*.h.
//
// NOTE: [stable ABI] The library is compiled with TORCH_TARGET_VERSION set to
// torch 2.11 (setup.py), so the headers offer only what torch 2.11's shim
// exports, and the one binary loads in every torch from 2.11 on without being
// rebuilt (tests/test_stable_abi.py checks the built library for C++ symbols
// of libtorch/libc10). What 2.11's stable surface lacks, and how each is
// handled:
// - ATen ops with a `Scalar` argument cannot be called through the stable
//   dispatcher (torch_call_dispatcher converts float, int, bool, Tensor and
//   lists, not Scalar): the step counters on a GPU are advanced by a kernel
//   of ours (cuda/step_counter_kernel.h), not by _foreach_add_, and the CUDA
//   norm of fused_rmsprop::grad_norm (_foreach_norm, linalg_vector_norm) runs
//   in Python (fused_rmsprop/_ops.py), after the C++ op's checks.
// - Tensor::is_non_overlapping_and_dense and Tensor::item are not in the
//   stable Tensor: computed here from sizes and strides, and read from host
//   memory (a GPU value is copied with torch::stable::to first).
// - c10::cuda::getCurrentCUDAStream: the AOTI shim's
//   aoti_torch_get_current_cuda_stream (cuda/rmsprop_cuda.cu).
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>
#include <torch/headeronly/util/HeaderOnlyArrayRef.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace fused_rmsprop {

using Tensor = torch::stable::Tensor;
using IntList = torch::headeronly::HeaderOnlyArrayRef<int64_t>;
using ScalarType = torch::headeronly::ScalarType;
using Layout = torch::headeronly::Layout;
using Device = torch::stable::Device;
using DeviceType = torch::headeronly::DeviceType;
using BFloat16 = c10::BFloat16;
using Half = c10::Half;

inline constexpr ScalarType kFloat = ScalarType::Float;
inline constexpr ScalarType kDouble = ScalarType::Double;
inline constexpr ScalarType kHalf = ScalarType::Half;
inline constexpr ScalarType kBFloat16 = ScalarType::BFloat16;
inline constexpr ScalarType kByte = ScalarType::Byte;

// A tensor an op borrows from its caller for the duration of the call: a
// handle of the stable C shim, not owned. The ops' boxed entries read their
// tensor arguments as handles (op_entry.h), so a call allocates nothing per
// tensor beyond what the shim allocates itself (a torch::stable::Tensor owns
// its handle through a shared pointer: one more allocation per tensor, 35 µs
// in a call of 800 tensors; docs/performance.md). The methods are the stable
// Tensor's, each one call into the shim.
class TensorRef {
 public:
  TensorRef() = default;  // undefined
  explicit TensorRef(AtenTensorHandle handle) : handle_(handle) {}
  TensorRef(const Tensor& t) : handle_(t.get()) {}  // NOLINT: borrows from an owner

  AtenTensorHandle get() const { return handle_; }
  bool defined() const;
  void* data_ptr() const;
  int64_t numel() const;
  int64_t dim() const;
  IntList sizes() const;
  IntList strides() const;
  bool is_contiguous() const;
  bool is_cpu() const;
  int32_t get_device_index() const;
  Layout layout() const;
  // A new owning reference (for the stable ops, which take a Tensor).
  Tensor to_owned() const;

 private:
  AtenTensorHandle handle_ = nullptr;
};

using TensorList = torch::headeronly::HeaderOnlyArrayRef<TensorRef>;

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
}  // namespace detail

// Raises RuntimeError (std::runtime_error) with the message made of the
// arguments, as TORCH_CHECK does; every message of ours starts with
// "fused_rmsprop".
#define FUSED_RMSPROP_CHECK(cond, ...)                                          \
  if (__builtin_expect(!(cond), 0)) {                                           \
    throw std::runtime_error(::fused_rmsprop::detail::concat(__VA_ARGS__));     \
  }

// A tensor's dtype, device and whether it is strided (dense), as
// Tensor::scalar_type(), device() and layout() give them, but with the shim's
// codes of the dtypes and devices we use looked up once: the stable Tensor's
// methods map each code by up to 20 calls into the shim, and a 200-parameter
// call reads these about 3000 times.
ScalarType dtype_of(const TensorRef& t);
Device device_of(const TensorRef& t);
bool is_strided(const TensorRef& t);

// For messages: "cpu", "cuda:0", "[2, 3]", "Strided", as torch prints them.
std::string to_string(const Device& device);
std::string to_string(IntList values);
std::string to_string(Layout layout);

// Whether the tensor's elements fill a block of memory without overlapping
// (a contiguous tensor or a permutation of one), as at::Tensor's
// is_non_overlapping_and_dense.
bool is_non_overlapping_and_dense(IntList sizes, IntList strides);
inline bool is_non_overlapping_and_dense(const TensorRef& t) {
  return is_non_overlapping_and_dense(t.sizes(), t.strides());
}

// The value of a one-element float32 or float64 tensor, copied to the host
// first when it is on a GPU (which waits for the device).
double read_scalar(const TensorRef& t);

// The same for a tensor known to be in host memory (no dispatch, no copy).
inline double read_host_scalar(const TensorRef& t) {
  return dtype_of(t) == kDouble ? *static_cast<const double*>(t.data_ptr())
                                : *static_cast<const float*>(t.data_ptr());
}

}  // namespace fused_rmsprop
