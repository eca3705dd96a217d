// 8-bit state codes (NOTE: [8-bit state codes]) in vector registers: the
// encoding and decoding of a whole block of kQuantBlock elements, written
// with intrinsics for the AVX-512 and AVX2 copies of the CPU loop (NOTE:
// [run-time ISA choice]). They give the bytes encode_code and the floats
// decode_code give, for every input (tests/test_cpu_isa.py compares them
// with the baseline copy's element-by-element code).
//
// NOTE: [code packing] encode_code clamps each magnitude to [0, top] and then
// narrows it to a byte: per element a max, a min and a truncation, which GCC
// turns into compares, blends and masks (10 operations per 8 elements with
// AVX2). Here the clamps come from saturating packs instead: the unclamped
// magnitude (|y| bits - base + 2^19) >> 20 lies in [-889, 1287] for every
// float, so packing four vectors of int32 to int16 (exact) and the int16 to
// bytes with unsigned saturation clamps it to [0, 255] in two instructions
// per 4 vectors. The signed codes take a min with 127 on the int16 first,
// and their sign bit from the packed sign masks. The packs work per 128-bit
// lane, so a final permutation of 32-bit groups puts the bytes back in
// memory order.
//
// The functions carry their ISA as a target attribute, so they are inlined
// only into the copy of the loop compiled for it (rmsprop_cpu.cpp); nothing
// else may call them. BlockCodes<kIsa> at the end names them per copy.
#pragma once

#include <cstdint>

#include "isa.h"
#include "../quantized_state.h"

#ifdef FUSED_RMSPROP_X86_ISAS
#include <immintrin.h>
#endif

namespace fused_rmsprop::cpu {

#ifdef FUSED_RMSPROP_X86_ISAS

// Encodes x[0, kQuantBlock) times `inverse` into codes (AVX-512, 64 per round).
template <bool kSigned>
FUSED_RMSPROP_TARGET_V4
inline void encode_full_block_avx512(uint8_t* __restrict codes,
                                     const float* __restrict x,
                                     float inverse) {
  const __m512 inv = _mm512_set1_ps(inverse);
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i offset =
      _mm512_set1_epi32((kSigned ? kSignedBase : kUnsignedBase) - kRoundToNearest);
  // after the packs, 32-bit group 4 * lane + vector holds 4 codes of that vector
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int64_t i = 0; i < kQuantBlock; i += 64) {
    __m512i bits[4], magnitude[4];
    for (int k = 0; k < 4; ++k) {
      bits[k] = _mm512_castps_si512(_mm512_mul_ps(_mm512_loadu_ps(x + i + 16 * k), inv));
      magnitude[k] = _mm512_srai_epi32(
          _mm512_sub_epi32(_mm512_and_si512(bits[k], abs_mask), offset), kCodeShift);
    }
    __m512i low = _mm512_packs_epi32(magnitude[0], magnitude[1]);
    __m512i high = _mm512_packs_epi32(magnitude[2], magnitude[3]);
    if constexpr (kSigned) {
      low = _mm512_min_epi16(low, _mm512_set1_epi16(127));
      high = _mm512_min_epi16(high, _mm512_set1_epi16(127));
    }
    __m512i packed = _mm512_packus_epi16(low, high);
    if constexpr (kSigned) {
      const __m512i sign = _mm512_packs_epi16(
          _mm512_packs_epi32(_mm512_srai_epi32(bits[0], 31), _mm512_srai_epi32(bits[1], 31)),
          _mm512_packs_epi32(_mm512_srai_epi32(bits[2], 31), _mm512_srai_epi32(bits[3], 31)));
      // packed | (sign & 0x80)
      packed = _mm512_ternarylogic_epi32(packed, sign, _mm512_set1_epi8(-128), 0xF8);
    }
    _mm512_storeu_si512(codes + i, _mm512_permutexvar_epi32(order, packed));
  }
}

// The same with AVX2, 32 per round.
template <bool kSigned>
FUSED_RMSPROP_TARGET_V3
inline void encode_full_block_avx2(uint8_t* __restrict codes,
                                   const float* __restrict x,
                                   float inverse) {
  const __m256 inv = _mm256_set1_ps(inverse);
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i offset =
      _mm256_set1_epi32((kSigned ? kSignedBase : kUnsignedBase) - kRoundToNearest);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t i = 0; i < kQuantBlock; i += 32) {
    __m256i bits[4], magnitude[4];
    for (int k = 0; k < 4; ++k) {
      bits[k] = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * k), inv));
      magnitude[k] = _mm256_srai_epi32(
          _mm256_sub_epi32(_mm256_and_si256(bits[k], abs_mask), offset), kCodeShift);
    }
    __m256i low = _mm256_packs_epi32(magnitude[0], magnitude[1]);
    __m256i high = _mm256_packs_epi32(magnitude[2], magnitude[3]);
    if constexpr (kSigned) {
      low = _mm256_min_epi16(low, _mm256_set1_epi16(127));
      high = _mm256_min_epi16(high, _mm256_set1_epi16(127));
    }
    __m256i packed = _mm256_packus_epi16(low, high);
    if constexpr (kSigned) {
      const __m256i sign = _mm256_packs_epi16(
          _mm256_packs_epi32(_mm256_srai_epi32(bits[0], 31), _mm256_srai_epi32(bits[1], 31)),
          _mm256_packs_epi32(_mm256_srai_epi32(bits[2], 31), _mm256_srai_epi32(bits[3], 31)));
      packed = _mm256_or_si256(packed, _mm256_and_si256(sign, _mm256_set1_epi8(-128)));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i),
                        _mm256_permutevar8x32_epi32(packed, order));
  }
}

// NOTE: [code unpacking] A code's float bits are base + (magnitude << 20),
// or 0 for magnitude 0, with the sign bit of a signed code on top. A signed
// code sign-extended to 32 bits and shifted left by 20 has its sign bit at
// bit 31 (and at 27..30, masked off) and its magnitude at bits 20..26, so one
// shift and one mask put both in place, and the base is added only where the
// magnitude is not 0: no separate sign shift and OR (6 operations per 16
// codes with AVX-512, 7 per 8 with AVX2, instead of 8 and 9).
constexpr int32_t kSignAndMagnitude = INT32_MIN | (0x7F << kCodeShift);
constexpr int32_t kMagnitude = 0x7F << kCodeShift;

// Decodes a whole block of codes times `scale` into x (AVX-512, 16 per round).
template <bool kSigned>
FUSED_RMSPROP_TARGET_V4
inline void decode_full_block_avx512(float* __restrict x,
                                     const uint8_t* __restrict codes,
                                     float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  const __m512i base = _mm512_set1_epi32(kSigned ? kSignedBase : kUnsignedBase);
  for (int64_t i = 0; i < kQuantBlock; i += 16) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
    __m512i bits;
    if constexpr (kSigned) {
      const __m512i field = _mm512_and_si512(
          _mm512_slli_epi32(_mm512_cvtepi8_epi32(raw), kCodeShift),
          _mm512_set1_epi32(kSignAndMagnitude));
      const __mmask16 nonzero = _mm512_test_epi32_mask(field, _mm512_set1_epi32(kMagnitude));
      bits = _mm512_mask_add_epi32(field, nonzero, field, base);
    } else {
      const __m512i field = _mm512_slli_epi32(_mm512_cvtepu8_epi32(raw), kCodeShift);
      bits = _mm512_maskz_add_epi32(_mm512_test_epi32_mask(field, field), field, base);
    }
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_castsi512_ps(bits), s));
  }
}

// The same with AVX2, 8 per round. psignd(a, b) is a where b > 0 and 0
// where b is 0, the select of the base.
template <bool kSigned>
FUSED_RMSPROP_TARGET_V3
inline void decode_full_block_avx2(float* __restrict x,
                                   const uint8_t* __restrict codes,
                                   float scale) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i base = _mm256_set1_epi32(kSigned ? kSignedBase : kUnsignedBase);
  for (int64_t i = 0; i < kQuantBlock; i += 8) {
    const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i));
    __m256i bits;
    if constexpr (kSigned) {
      const __m256i field = _mm256_and_si256(
          _mm256_slli_epi32(_mm256_cvtepi8_epi32(raw), kCodeShift),
          _mm256_set1_epi32(kSignAndMagnitude));
      const __m256i magnitude = _mm256_and_si256(field, _mm256_set1_epi32(kMagnitude));
      bits = _mm256_add_epi32(field, _mm256_sign_epi32(base, magnitude));
    } else {
      const __m256i field = _mm256_slli_epi32(_mm256_cvtepu8_epi32(raw), kCodeShift);
      bits = _mm256_sign_epi32(_mm256_add_epi32(field, base), field);
    }
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_castsi256_ps(bits), s));
  }
}

#endif  // FUSED_RMSPROP_X86_ISAS

// The whole-block code functions of the copy of the loop for kIsa; kVector
// is false for the copies without them (baseline, other CPUs).
template <Isa kIsa>
struct BlockCodes {
  static constexpr bool kVector = false;
};

#ifdef FUSED_RMSPROP_X86_ISAS
template <>
struct BlockCodes<Isa::kX86_64_V4> {
  static constexpr bool kVector = true;
  template <bool kSigned>
  FUSED_RMSPROP_TARGET_V4 static void encode(uint8_t* codes, const float* x, float inverse) {
    encode_full_block_avx512<kSigned>(codes, x, inverse);
  }
  template <bool kSigned>
  FUSED_RMSPROP_TARGET_V4 static void decode(float* x, const uint8_t* codes, float scale) {
    decode_full_block_avx512<kSigned>(x, codes, scale);
  }
};

template <>
struct BlockCodes<Isa::kX86_64_V3> {
  static constexpr bool kVector = true;
  template <bool kSigned>
  FUSED_RMSPROP_TARGET_V3 static void encode(uint8_t* codes, const float* x, float inverse) {
    encode_full_block_avx2<kSigned>(codes, x, inverse);
  }
  template <bool kSigned>
  FUSED_RMSPROP_TARGET_V3 static void decode(float* x, const uint8_t* codes, float scale) {
    decode_full_block_avx2<kSigned>(x, codes, scale);
  }
};
#endif

}  // namespace fused_rmsprop::cpu
