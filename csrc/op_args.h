// The arguments of fused_rmsprop::rmsprop_, written once.
//
// NOTE: [argument table] FUSED_RMSPROP_LIST_ARGS (positional) and
// FUSED_RMSPROP_OPTION_ARGS (keyword-only) list every argument after
// `params` as X(kind, destination, name, schema default). From them come the
// schema string (op_schema(), below), the C++ signature of every device's
// entry and of the emulation op (FUSED_RMSPROP_DECLARE_ARGS), the fields of
// TensorLists, and the packing of the arguments into TensorLists and
// RMSpropOptions (op_entry.h). A new argument is one line here (a field of
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

// Per kind: the type the entry takes, the type TensorLists keeps, the
// schema type (with an alias set for updated tensors), and the unpacking.
// The entry is boxed by TORCH_BOX, which unpacks each list into a
// std::vector that lives for the whole call: the TensorLists are views of
// those.
template <typename Taken, typename Kept>
struct Kind {
  using TakenType = Taken;
  using KeptType = Kept;
};
struct List : Kind<TensorList, TensorList> {
  static std::string schema(char) { return "Tensor[]"; }
};
struct MutList : Kind<TensorList, TensorList> {
  static std::string schema(char alias) {
    return alias ? std::string("Tensor(") + alias + "!)[]" : "Tensor[]";
  }
};
struct OptMutList : Kind<const std::optional<TensorList>&, TensorList> {
  static std::string schema(char alias) { return MutList::schema(alias) + "?"; }
};
struct OptTensor : Kind<const std::optional<Tensor>&, Tensor> {
  static std::string schema(char) { return "Tensor?"; }
};
struct Float : Kind<double, double> {
  static std::string schema(char) { return "float"; }
};
struct Bool : Kind<bool, bool> {
  static std::string schema(char) { return "bool"; }
};
struct Int : Kind<int64_t, int64_t> {
  static std::string schema(char) { return "int"; }
};
struct IntList : Kind<fused_rmsprop::IntList, fused_rmsprop::IntList> {
  static std::string schema(char) { return "int[]"; }
};

template <typename K>
constexpr bool kUpdated = std::is_same_v<K, MutList> || std::is_same_v<K, OptMutList>;

inline TensorList unpack(const std::optional<TensorList>& x) {
  return x.value_or(TensorList());
}
inline Tensor unpack(const std::optional<Tensor>& x) {
  return x.has_value() ? *x : Tensor();
}
template <typename X>
X unpack(X x) {
  return x;
}

}  // namespace args

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

}  // namespace fused_rmsprop

// The entry's parameter list after `params`: `, double lr, bool maximize, ...`.
#define FUSED_RMSPROP_DECLARE_ARG(kind, dest, name, dflt) \
  , fused_rmsprop::args::kind::TakenType name
#define FUSED_RMSPROP_DECLARE_ARGS                   \
  FUSED_RMSPROP_LIST_ARGS(FUSED_RMSPROP_DECLARE_ARG) \
  FUSED_RMSPROP_OPTION_ARGS(FUSED_RMSPROP_DECLARE_ARG)

// Packs the entry's arguments (in scope by their names) into the variables
// `lists` (TensorLists) and `opts` (RMSpropOptions).
#define FUSED_RMSPROP_PACK_ARG(kind, dest, name, dflt) \
  dest.name = fused_rmsprop::args::unpack(name);
#define FUSED_RMSPROP_PACK_ARGS                     \
  lists.params = params;                            \
  FUSED_RMSPROP_LIST_ARGS(FUSED_RMSPROP_PACK_ARG)   \
  FUSED_RMSPROP_OPTION_ARGS(FUSED_RMSPROP_PACK_ARG)
