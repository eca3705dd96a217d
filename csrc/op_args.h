// The arguments of fused_rmsprop::rmsprop_, written once.
//
// NOTE: [argument table] FUSED_RMSPROP_LIST_ARGS (positional) and
// FUSED_RMSPROP_OPTION_ARGS (keyword-only) list every argument after
// `params` as X(kind, destination, name, schema default). From them come the
// schema string (op_schema(), below), the fields of TensorLists, and the
// unpacking of a boxed call's arguments into TensorLists and RMSpropOptions
// (unpack_args, below), which every device's entry and the emulation op
// use. A new argument is one line here (a field of
// RMSpropOptions too when it is a kernel option), then its use: a check in
// op_checks.cpp and the kernels that read it. The Python side passes
// arguments by name and its fake kernel takes them as **options.
//
// Kinds: List (read-only tensors), MutList (tensors updated in place),
// OptMutList (an optional list of updated tensors), OptTensor, Float, Bool,
// Int, IntList. Destinations: lists (TensorLists) or opts (RMSpropOptions).
//
// What the arguments mean (NOTE: [schema]): one call updates one device/dtype
// group of parameters in the style of aten::_fused_adagrad_. Features that
// are off pass empty lists: momentum_buffers when momentum == 0, grad_avgs
// when not centered. The step counters (state_steps) are advanced by the op
// (NOTE: [step counters] in step_counters.h); pass an empty list to leave
// them alone. grad_scale and found_inf follow GradScaler's protocol for
// fused optimizers (as aten::_fused_adam_): gradients are unscaled inside
// the kernel, and a non-zero found_inf leaves params, state and counters
// untouched. lr_tensor, when given, replaces lr: the kernel reads it from
// device memory (no host sync; a captured CUDA graph follows it).
// grad_factor multiplies every gradient after unscaling: the clipping
// coefficient, computed on the device. rounding_ids, when not empty, gives
// each param an id (its index in the optimizer) and turns on stochastic
// rounding of bfloat16 stores (NOTE: [rounding generator]).
// square_avg_scales, momentum_buffer_scales and grad_avg_scales, when given,
// make the state 8-bit: the state lists hold uint8 codes and these the
// float32 scale of each block (NOTE: [8-bit state codes]).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rmsprop_rule.h"
#include "torch_api.h"

#define FUSED_RMSPROP_LIST_ARGS(X)             \
  X(List, lists, grads, "")                    \
  X(MutList, lists, square_avgs, "")           \
  X(MutList, lists, momentum_buffers, "")      \
  X(MutList, lists, grad_avgs, "")             \
  X(MutList, lists, state_steps, "")

#define FUSED_RMSPROP_OPTION_ARGS(X)                       \
  X(Float, opts, lr, "")                                   \
  X(Float, opts, alpha, "")                                \
  X(Float, opts, eps, "")                                  \
  X(Float, opts, weight_decay, "")                         \
  X(Float, opts, momentum, "")                             \
  X(Bool, opts, maximize, "")                              \
  X(Bool, opts, eps_in_sqrt, "=False")                     \
  X(Bool, opts, lr_in_momentum, "=False")                  \
  X(Bool, opts, decoupled_weight_decay, "=False")          \
  X(OptTensor, lists, grad_scale, "=None")                 \
  X(OptTensor, lists, found_inf, "=None")                  \
  X(OptTensor, lists, lr_tensor, "=None")                  \
  X(OptTensor, lists, grad_factor, "=None")                \
  X(IntList, lists, rounding_ids, "=[]")                   \
  X(Int, lists, rounding_seed, "=0")                       \
  X(OptMutList, lists, square_avg_scales, "=None")         \
  X(OptMutList, lists, momentum_buffer_scales, "=None")    \
  X(OptMutList, lists, grad_avg_scales, "=None")

namespace fused_rmsprop {
namespace args {

// What a boxed call's arguments hold for the duration of the call: the
// tensor handles, deleted at the end (even when the call raises), and the
// storage the TensorLists view.
class BorrowedArgs {
 public:
  BorrowedArgs() = default;
  BorrowedArgs(const BorrowedArgs&) = delete;
  BorrowedArgs& operator=(const BorrowedArgs&) = delete;
  ~BorrowedArgs();

  TensorList take_list(StableListHandle list);
  TensorRef take_tensor(AtenTensorHandle tensor);
  fused_rmsprop::IntList take_ints(std::vector<int64_t> values);

 private:
  std::vector<AtenTensorHandle> handles_;
  std::vector<std::vector<TensorRef>> lists_;  // moving one keeps its buffer
  std::vector<std::vector<int64_t>> ints_;
};

// Per kind: the type TensorLists keeps, the schema type (with an alias set
// for updated tensors), and the unpacking of the kind from a boxed call's
// stack (NOTE: [stable ABI]: tensors stay handles of the shim, borrowed).
template <typename Kept>
struct Kind {
  using KeptType = Kept;
};
struct List : Kind<TensorList> {
  static std::string schema(char) { return "Tensor[]"; }
  static TensorList take(StableIValue v, BorrowedArgs& args) {
    return args.take_list(torch::stable::detail::to<StableListHandle>(v));
  }
};
struct MutList : Kind<TensorList> {
  static std::string schema(char alias) {
    return alias ? std::string("Tensor(") + alias + "!)[]" : "Tensor[]";
  }
  static TensorList take(StableIValue v, BorrowedArgs& args) { return List::take(v, args); }
};
struct OptMutList : Kind<TensorList> {
  static std::string schema(char alias) { return MutList::schema(alias) + "?"; }
  static TensorList take(StableIValue v, BorrowedArgs& args) {
    const auto list = torch::stable::detail::to<std::optional<StableListHandle>>(v);
    return list.has_value() ? args.take_list(*list) : TensorList();
  }
};
struct OptTensor : Kind<TensorRef> {
  static std::string schema(char) { return "Tensor?"; }
  static TensorRef take(StableIValue v, BorrowedArgs& args) {
    const auto tensor = torch::stable::detail::to<std::optional<AtenTensorHandle>>(v);
    return tensor.has_value() ? args.take_tensor(*tensor) : TensorRef();
  }
};
struct Float : Kind<double> {
  static std::string schema(char) { return "float"; }
  static double take(StableIValue v, BorrowedArgs&) { return torch::stable::detail::to<double>(v); }
};
struct Bool : Kind<bool> {
  static std::string schema(char) { return "bool"; }
  static bool take(StableIValue v, BorrowedArgs&) { return torch::stable::detail::to<bool>(v); }
};
struct Int : Kind<int64_t> {
  static std::string schema(char) { return "int"; }
  static int64_t take(StableIValue v, BorrowedArgs&) {
    return torch::stable::detail::to<int64_t>(v);
  }
};
struct IntList : Kind<fused_rmsprop::IntList> {
  static std::string schema(char) { return "int[]"; }
  static fused_rmsprop::IntList take(StableIValue v, BorrowedArgs& args) {
    return args.take_ints(torch::stable::detail::to<std::vector<int64_t>>(v));
  }
};

template <typename K>
constexpr bool kUpdated = std::is_same_v<K, MutList> || std::is_same_v<K, OptMutList>;

}  // namespace args

using args::BorrowedArgs;

// The schema of an op taking `params` and the table's arguments, then
// `extra` (e.g. ", int chunk_size=65536"). With `updates`, the updated
// tensors are annotated as written (the update op); without, it is the
// check-only op's schema.
inline std::string op_schema(const char* name, bool updates, const char* extra = "") {
  char alias = 'a';
  std::string s = std::string(name) + "(" + args::MutList::schema(updates ? alias++ : 0) +
      " params";
#define FUSED_RMSPROP_SCHEMA_ARG(kind, dest, name, dflt)                                        \
  s += std::string(", ") +                                                                     \
      args::kind::schema(updates && args::kUpdated<args::kind> ? alias++ : 0) + " " #name dflt;
  FUSED_RMSPROP_LIST_ARGS(FUSED_RMSPROP_SCHEMA_ARG)
  s += ", *";
  FUSED_RMSPROP_OPTION_ARGS(FUSED_RMSPROP_SCHEMA_ARG)
#undef FUSED_RMSPROP_SCHEMA_ARG
  return s + extra + ") -> ()";
}

// Every tensor argument of one call, and the other arguments that are not
// kernel options (RMSpropOptions): TensorLists' fields come from the table.
struct TensorLists {
  TensorList params;
#define FUSED_RMSPROP_FIELD_lists(kind, name) args::kind::KeptType name{};
#define FUSED_RMSPROP_FIELD_opts(kind, name)
#define FUSED_RMSPROP_FIELD(kind, dest, name, dflt) FUSED_RMSPROP_FIELD_##dest(kind, name)
  FUSED_RMSPROP_LIST_ARGS(FUSED_RMSPROP_FIELD)
  FUSED_RMSPROP_OPTION_ARGS(FUSED_RMSPROP_FIELD)
#undef FUSED_RMSPROP_FIELD
#undef FUSED_RMSPROP_FIELD_opts
#undef FUSED_RMSPROP_FIELD_lists

  bool has_momentum() const { return !momentum_buffers.empty(); }
  bool centered() const { return !grad_avgs.empty(); }
  bool stochastic_rounding() const { return !rounding_ids.empty(); }
  bool quantized() const { return !square_avg_scales.empty(); }
};

// The number of arguments of an op of the table: params and the table's.
#define FUSED_RMSPROP_COUNT_ARG(kind, dest, name, dflt) +1
inline constexpr uint64_t kTableArgs =
    1 FUSED_RMSPROP_LIST_ARGS(FUSED_RMSPROP_COUNT_ARG) FUSED_RMSPROP_OPTION_ARGS(FUSED_RMSPROP_COUNT_ARG);
#undef FUSED_RMSPROP_COUNT_ARG

// Unpacks the table's arguments, stack[0, kTableArgs) of a boxed call, into
// `lists` and `opts`; `borrowed` keeps what they borrow.
inline void unpack_args(StableIValue* stack, BorrowedArgs& borrowed, TensorLists& lists,
                        RMSpropOptions& opts) {
  uint64_t i = 0;
  lists.params = args::MutList::take(stack[i++], borrowed);
#define FUSED_RMSPROP_TAKE_ARG(kind, dest, name, dflt) \
  dest.name = args::kind::take(stack[i++], borrowed);
  FUSED_RMSPROP_LIST_ARGS(FUSED_RMSPROP_TAKE_ARG)
  FUSED_RMSPROP_OPTION_ARGS(FUSED_RMSPROP_TAKE_ARG)
#undef FUSED_RMSPROP_TAKE_ARG
}

}  // namespace fused_rmsprop
