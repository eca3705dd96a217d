#include "half_blocks.h"
#include "isa.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FUSED_RMSPROP_HAVE_F16C_PATH 1
#endif

namespace fused_rmsprop::cpu {
namespace {

void half_to_float_scalar(const c10::Half* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = static_cast<float>(src[i]);
  }
}

void float_to_half_scalar(const float* src, c10::Half* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = static_cast<c10::Half>(src[i]);
  }
}

#ifdef FUSED_RMSPROP_HAVE_F16C_PATH
// F16C converts 8 values per instruction, rounding to nearest even as
// c10::Half does.
__attribute__((target("avx,f16c"))) void half_to_float_f16c(
    const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  half_to_float_scalar(src + i, dst + i, n - i);
}

__attribute__((target("avx,f16c"))) void float_to_half_f16c(
    const float* src, c10::Half* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  float_to_half_scalar(src + i, dst + i, n - i);
}

// F16C is part of x86-64-v3, so forcing the baseline ISA (tests) turns it off.
bool use_f16c() {
  return active_isa() != Isa::kBaseline;
}
#endif

}  // namespace

void half_to_float(const c10::Half* src, float* dst, int64_t n) {
#ifdef FUSED_RMSPROP_HAVE_F16C_PATH
  if (use_f16c()) {
    return half_to_float_f16c(src, dst, n);
  }
#endif
  half_to_float_scalar(src, dst, n);
}

void float_to_half(const float* src, c10::Half* dst, int64_t n) {
#ifdef FUSED_RMSPROP_HAVE_F16C_PATH
  if (use_f16c()) {
    return float_to_half_f16c(src, dst, n);
  }
#endif
  float_to_half_scalar(src, dst, n);
}

}  // namespace fused_rmsprop::cpu
