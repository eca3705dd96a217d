// Which x86-64 instruction set the CPU kernel's element loop runs with.
//
// NOTE: [run-time ISA choice] The shipped library must run on any x86-64 CPU,
// so it is built without -march flags. The element loop is compiled three
// times instead (rmsprop_cpu.cpp): for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 +
// FMA + F16C) and baseline SSE2, and each call runs the best one the CPU
// supports. Only that loop is compiled per ISA: everything it calls is
// inlined into each copy, so nothing compiled for a wider ISA can run on a
// narrower CPU. The build uses -ffp-contract=off, so every copy rounds alike
// and results do not depend on the CPU; tests/test_cpu_isa.py forces each
// copy the machine can run and compares their bits.
#pragma once

#include <string>

// The targets of the ISA copies, where the compiler can build them: the one
// home of their attributes (rmsprop_cpu.cpp's loop copies, code_vectors.h).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FUSED_RMSPROP_X86_ISAS 1
#define FUSED_RMSPROP_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define FUSED_RMSPROP_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#endif

namespace fused_rmsprop::cpu {

enum class Isa : int { kBaseline = 0, kX86_64_V3 = 1, kX86_64_V4 = 2 };

// The ISA calls run with now: the one forced by set_cpu_isa, else the best
// this CPU (and its OS) supports.
Isa active_isa();

// Test and diagnostic switch, also registered as fused_rmsprop::_cpu_isa:
// "" reports the active ISA, "auto" goes back to the best one, and
// "x86-64-v4", "x86-64-v3" or "baseline" force that copy of the loop
// (refused, naming what the CPU supports, when the CPU cannot run it).
// Returns the name of the ISA active afterwards.
std::string set_cpu_isa(const std::string& name);

}  // namespace fused_rmsprop::cpu
