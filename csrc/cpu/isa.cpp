#include "isa.h"

#include <atomic>

#include "../torch_api.h"

namespace fused_rmsprop::cpu {
namespace {

const char* const kNames[] = {"baseline", "x86-64-v3", "x86-64-v4"};

Isa best_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // libgcc's checks include the OS's support for the wider registers (XCR0).
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) {
    return Isa::kX86_64_V4;
  }
  if (__builtin_cpu_supports("x86-64-v3")) {
    return Isa::kX86_64_V3;
  }
#endif
  return Isa::kBaseline;
}

const Isa kBest = best_isa();
std::atomic<int> g_forced{-1};  // -1: none

}  // namespace

Isa active_isa() {
  const int forced = g_forced.load(std::memory_order_relaxed);
  return forced < 0 ? kBest : static_cast<Isa>(forced);
}

std::string set_cpu_isa(const std::string& name) {
  if (name == "auto") {
    g_forced.store(-1);
  } else if (!name.empty()) {
    int wanted = -1;
    for (int i = 0; i < 3; ++i) {
      if (name == kNames[i]) {
        wanted = i;
      }
    }
    FUSED_RMSPROP_CHECK(wanted >= 0, "fused_rmsprop: _cpu_isa: unknown ISA '", name,
        "'; expected 'auto', 'baseline', 'x86-64-v3' or 'x86-64-v4'");
    FUSED_RMSPROP_CHECK(wanted <= static_cast<int>(kBest), "fused_rmsprop: _cpu_isa: this CPU "
        "cannot run '", name, "'; it supports up to '", kNames[static_cast<int>(kBest)], "'");
    g_forced.store(wanted);
  }
  return kNames[static_cast<int>(active_isa())];
}

namespace {
std::string cpu_isa_op(std::string isa) {
  return set_cpu_isa(isa);
}
}  // namespace

STABLE_TORCH_LIBRARY_FRAGMENT(fused_rmsprop, m) {
  m.def("_cpu_isa(str isa=\"\") -> str");
}

STABLE_TORCH_LIBRARY_IMPL(fused_rmsprop, CompositeExplicitAutograd, m) {
  m.impl("_cpu_isa", TORCH_BOX(&cpu_isa_op));
}

}  // namespace fused_rmsprop::cpu
