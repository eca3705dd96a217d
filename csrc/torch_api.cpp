#include "torch_api.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace fused_rmsprop {

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

bool is_non_overlapping_and_dense(const Tensor& t) {
  const IntList sizes = t.sizes();
  const IntList strides = t.strides();
  const size_t dim = sizes.size();
  // Dimensions of size 1 (or 0) never decide the layout; the others, from
  // the smallest stride up, must each step over exactly the ones before.
  std::vector<size_t> order(dim);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (sizes[a] < 2 || sizes[b] < 2) {
      return sizes[a] >= 2 && sizes[b] < 2;  // sized-1 dims last
    }
    return strides[a] < strides[b];
  });
  int64_t expected = 1;
  for (const size_t d : order) {
    if (sizes[d] < 2) {
      return true;
    }
    if (strides[d] != expected) {
      return false;
    }
    expected *= sizes[d];
  }
  return true;
}

double read_scalar(const Tensor& t) {
  if (t.is_cpu()) {
    return read_host_scalar(t);
  }
  return read_host_scalar(torch::stable::to(t, Device(DeviceType::CPU)));
}

}  // namespace fused_rmsprop
