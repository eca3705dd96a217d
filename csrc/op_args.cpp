#include "op_args.h"

#include <utility>

namespace fused_rmsprop::args {

BorrowedArgs::~BorrowedArgs() {
  for (AtenTensorHandle handle : handles_) {
    aoti_torch_delete_tensor_object(handle);  // cannot fail for a handle we were given
  }
}

TensorList BorrowedArgs::take_list(StableListHandle list) {
  size_t size = 0;
  TORCH_ERROR_CODE_CHECK(torch_list_size(list, &size));
  std::vector<TensorRef> tensors;
  tensors.reserve(size);
  handles_.reserve(handles_.size() + size);
  for (size_t i = 0; i < size; ++i) {
    StableIValue item = 0;
    TORCH_ERROR_CODE_CHECK(torch_list_get_item(list, i, &item));
    const auto handle = torch::stable::detail::to<AtenTensorHandle>(item);
    handles_.push_back(handle);
    tensors.emplace_back(handle);
  }
  TORCH_ERROR_CODE_CHECK(torch_delete_list(list));
  lists_.push_back(std::move(tensors));
  return TensorList(lists_.back().data(), lists_.back().size());
}

TensorRef BorrowedArgs::take_tensor(AtenTensorHandle tensor) {
  handles_.push_back(tensor);
  return TensorRef(tensor);
}

fused_rmsprop::IntList BorrowedArgs::take_ints(std::vector<int64_t> values) {
  ints_.push_back(std::move(values));
  return fused_rmsprop::IntList(ints_.back().data(), ints_.back().size());
}

}  // namespace fused_rmsprop::args
