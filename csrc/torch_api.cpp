#include "torch_api.h"

#include <algorithm>
#include <numeric>

namespace fused_rmsprop {
namespace {

// The shim's codes (int32) of the dtypes, devices and layout we compare with.
struct ShimCodes {
  int32_t float32 = aoti_torch_dtype_float32();
  int32_t float64 = aoti_torch_dtype_float64();
  int32_t float16 = aoti_torch_dtype_float16();
  int32_t bfloat16 = aoti_torch_dtype_bfloat16();
  int32_t uint8 = aoti_torch_dtype_uint8();
  int32_t cpu = aoti_torch_device_type_cpu();
  int32_t cuda = aoti_torch_device_type_cuda();
  int32_t strided = aoti_torch_layout_strided();
};

const ShimCodes& codes() {
  static const ShimCodes kCodes;
  return kCodes;
}

}  // namespace

bool TensorRef::defined() const {
  if (handle_ == nullptr) {
    return false;
  }
  bool defined = false;
  TORCH_ERROR_CODE_CHECK(aoti_torch_is_defined(handle_, &defined));
  return defined;
}

void* TensorRef::data_ptr() const {
  void* data = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_data_ptr(handle_, &data));
  return data;
}

int64_t TensorRef::numel() const {
  int64_t numel = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_numel(handle_, &numel));
  return numel;
}

int64_t TensorRef::dim() const {
  int64_t dim = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_dim(handle_, &dim));
  return dim;
}

IntList TensorRef::sizes() const {
  int64_t* sizes = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_sizes(handle_, &sizes));
  return IntList(sizes, static_cast<size_t>(dim()));
}

IntList TensorRef::strides() const {
  int64_t* strides = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_strides(handle_, &strides));
  return IntList(strides, static_cast<size_t>(dim()));
}

bool TensorRef::is_contiguous() const {
  bool contiguous = false;
  TORCH_ERROR_CODE_CHECK(aoti_torch_is_contiguous(handle_, &contiguous));
  return contiguous;
}

bool TensorRef::is_cpu() const {
  int32_t type = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(handle_, &type));
  return type == codes().cpu;
}

int32_t TensorRef::get_device_index() const {
  int32_t index = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(handle_, &index));
  return index;
}

Layout TensorRef::layout() const {
  return to_owned().layout();
}

Tensor TensorRef::to_owned() const {
  AtenTensorHandle owned = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_new_tensor_handle(handle_, &owned));
  return Tensor(owned);
}

ScalarType dtype_of(const TensorRef& t) {
  int32_t code = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_dtype(t.get(), &code));
  const ShimCodes& c = codes();
  if (code == c.float32) return kFloat;
  if (code == c.float64) return kDouble;
  if (code == c.bfloat16) return kBFloat16;
  if (code == c.float16) return kHalf;
  if (code == c.uint8) return kByte;
  return t.to_owned().scalar_type();
}

Device device_of(const TensorRef& t) {
  int32_t type = 0;
  int32_t index = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(t.get(), &type));
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(t.get(), &index));
  const ShimCodes& c = codes();
  if (type == c.cpu) return Device(DeviceType::CPU, index);
  if (type == c.cuda) return Device(DeviceType::CUDA, index);
  return t.to_owned().device();
}

bool is_strided(const TensorRef& t) {
  int32_t layout = 0;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_layout(t.get(), &layout));
  return layout == codes().strided;
}

std::string to_string(const Device& device) {
  std::string name;
  switch (device.type()) {
    case DeviceType::CPU: name = "cpu"; break;
    case DeviceType::CUDA: name = "cuda"; break;
    case DeviceType::Meta: name = "meta"; break;
    default: name = "device type " + std::to_string(static_cast<int>(device.type())); break;
  }
  return device.has_index() ? name + ":" + std::to_string(device.index()) : name;
}

std::string to_string(IntList values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(values[i]);
  }
  return s + "]";
}

std::string to_string(Layout layout) {
  switch (layout) {
    case Layout::Strided: return "Strided";
    case Layout::Sparse: return "Sparse";
    case Layout::SparseCsr: return "SparseCsr";
    case Layout::SparseCsc: return "SparseCsc";
    case Layout::SparseBsr: return "SparseBsr";
    case Layout::SparseBsc: return "SparseBsc";
    case Layout::Mkldnn: return "Mkldnn";
    case Layout::Jagged: return "Jagged";
    default: return "layout " + std::to_string(static_cast<int>(layout));
  }
}

bool is_non_overlapping_and_dense(IntList sizes, IntList strides) {
  const size_t dim = sizes.size();
  // Contiguous (the common case): each dimension of size > 1 steps over the
  // ones after it.
  int64_t expected = 1;
  bool contiguous = true;
  for (size_t d = dim; d-- > 0;) {
    if (sizes[d] != 1) {
      if (strides[d] != expected) {
        contiguous = false;
        break;
      }
      expected *= sizes[d];
    }
  }
  if (contiguous || expected == 0) {
    return true;
  }
  // Otherwise a permutation of a contiguous tensor: dimensions of size 1 (or
  // 0) never decide the layout; the others, from the smallest stride up, must
  // each step over exactly the ones before. Tensors have at most a few dims.
  constexpr size_t kMaxDims = 64;
  if (dim > kMaxDims) {
    return false;
  }
  size_t order[kMaxDims];
  size_t m = 0;
  for (size_t d = 0; d < dim; ++d) {
    if (sizes[d] == 0) {
      return true;  // no elements
    }
    if (sizes[d] != 1) {
      order[m++] = d;
    }
  }
  std::sort(order, order + m, [&](size_t a, size_t b) { return strides[a] < strides[b]; });
  expected = 1;
  for (size_t i = 0; i < m; ++i) {
    if (strides[order[i]] != expected) {
      return false;
    }
    expected *= sizes[order[i]];
  }
  return true;
}

double read_scalar(const TensorRef& t) {
  if (t.is_cpu()) {
    return read_host_scalar(t);
  }
  const Tensor on_host = torch::stable::to(t.to_owned(), Device(DeviceType::CPU));
  return read_host_scalar(on_host);
}

}  // namespace fused_rmsprop
