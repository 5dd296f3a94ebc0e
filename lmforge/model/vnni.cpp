// lmforge's int4 and int8 products on x86 CPUs with AVX-512 VNNI (see vnni.py, which builds and loads this).
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && defined(__AVX512VBMI__)
#include <immintrin.h>
#define READY 1
#else
#define READY 0
#endif

extern "C" int lmforge_vnni_ready(void) { return READY; }

/* y (M, N) = step[m] * sum_g scales[g, n] * dot_g(xq[m], q[n]) + sum_g offsets[g, n] * sums[m, g].
   w: the packed int4 weight stored column-major, (K / 2, N) bytes: byte (c, n) holds input 2c of
   output n in its low nibble and input 2c + 1 in its high one. xq: each block of 8 inputs ordered
   as its 4 even inputs, then its 4 odd ones. scales, offsets: (G, N), G = K / group. */
#if READY
static inline __m512i dot8(__m512i dots, __m512i v, __m512i evens, __m512i odds) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    dots = _mm512_dpbusd_epi32(dots, _mm512_and_si512(v, low), evens);
    return _mm512_dpbusd_epi32(dots, _mm512_and_si512(_mm512_srli_epi16(v, 4), low), odds);
}

static inline __m512i broadcast4(const int8_t* x) {
    int32_t four;
    memcpy(&four, x, 4);
    return _mm512_set1_epi32(four);
}

/* 64 outputs from n0: four rows of 64 packed bytes are interleaved into 4 registers of 16 lanes x
   4 bytes (lane 4j + i of register r: output n0 + 16j + 4r + i), and the int32 dots are put back
   in output order per group by a 4 x 4 transpose of 128-bit chunks. */
static void tile64(const int8_t* xq, const float* step, const float* sums, const uint8_t* w,
                   const float* scales, const float* offsets, float* y,
                   int64_t M, int64_t N, int64_t K, int64_t group, int64_t n0) {
    const int64_t G = K / group, per_group = group / 8;
    for (int64_t m = 0; m < M; m++) {
        const int8_t* xm = xq + m * K;
        __m512 acc[4], acc_offsets[4];
        for (int r = 0; r < 4; r++) acc[r] = acc_offsets[r] = _mm512_setzero_ps();
        for (int64_t g = 0; g < G; g++) {
            __m512i d[4];
            for (int r = 0; r < 4; r++) d[r] = _mm512_setzero_si512();
            for (int64_t b = g * per_group; b < (g + 1) * per_group; b++) {
                const uint8_t* p = w + 4 * b * N + n0;
                __m512i r0 = _mm512_loadu_si512((const void*)p), r1 = _mm512_loadu_si512((const void*)(p + N));
                __m512i r2 = _mm512_loadu_si512((const void*)(p + 2 * N)), r3 = _mm512_loadu_si512((const void*)(p + 3 * N));
                __m512i a = _mm512_unpacklo_epi8(r0, r1), c = _mm512_unpacklo_epi8(r2, r3);
                __m512i e = _mm512_unpackhi_epi8(r0, r1), f = _mm512_unpackhi_epi8(r2, r3);
                __m512i evens = broadcast4(xm + 8 * b), odds = broadcast4(xm + 8 * b + 4);
                d[0] = dot8(d[0], _mm512_unpacklo_epi16(a, c), evens, odds);
                d[1] = dot8(d[1], _mm512_unpackhi_epi16(a, c), evens, odds);
                d[2] = dot8(d[2], _mm512_unpacklo_epi16(e, f), evens, odds);
                d[3] = dot8(d[3], _mm512_unpackhi_epi16(e, f), evens, odds);
            }
            __m512i t0 = _mm512_shuffle_i32x4(d[0], d[1], 0x44), t1 = _mm512_shuffle_i32x4(d[0], d[1], 0xEE);
            __m512i t2 = _mm512_shuffle_i32x4(d[2], d[3], 0x44), t3 = _mm512_shuffle_i32x4(d[2], d[3], 0xEE);
            __m512i ordered[4] = {_mm512_shuffle_i32x4(t0, t2, 0x88), _mm512_shuffle_i32x4(t0, t2, 0xDD),
                                  _mm512_shuffle_i32x4(t1, t3, 0x88), _mm512_shuffle_i32x4(t1, t3, 0xDD)};
            const __m512 sum = _mm512_set1_ps(sums[m * G + g]);
            for (int k = 0; k < 4; k++) {
                const int64_t at = g * N + n0 + 16 * k;
                acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ordered[k]), _mm512_loadu_ps(scales + at), acc[k]);
                acc_offsets[k] = _mm512_fmadd_ps(sum, _mm512_loadu_ps(offsets + at), acc_offsets[k]);
            }
        }
        for (int k = 0; k < 4; k++)
            _mm512_storeu_ps(y + m * N + n0 + 16 * k, _mm512_fmadd_ps(acc[k], _mm512_set1_ps(step[m]), acc_offsets[k]));
    }
}

/* up to 16 outputs from n0 (the outputs past the last 64): four masked rows of 16 bytes,
   transposed into 16 lanes x 4 bytes by one byte permutation. */
static void tile16(const int8_t* xq, const float* step, const float* sums, const uint8_t* w,
                   const float* scales, const float* offsets, float* y,
                   int64_t M, int64_t N, int64_t K, int64_t group, int64_t n0) {
    const int64_t G = K / group, per_group = group / 8, left = N - n0;
    const __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    uint8_t order[64];                       /* byte 4l + k of a lane-major block: byte l of row k */
    for (int l = 0; l < 16; l++)
        for (int k = 0; k < 4; k++) order[4 * l + k] = (uint8_t)(16 * k + l);
    const __m512i idx = _mm512_loadu_si512((const void*)order);
    for (int64_t m = 0; m < M; m++) {
        const int8_t* xm = xq + m * K;
        __m512 acc = _mm512_setzero_ps(), acc_offsets = _mm512_setzero_ps();
        for (int64_t g = 0; g < G; g++) {
            __m512i dots = _mm512_setzero_si512();
            for (int64_t b = g * per_group; b < (g + 1) * per_group; b++) {
                const uint8_t* p = w + 4 * b * N + n0;
                __m512i v = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(mask, p));
                v = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(mask, p + N), 1);
                v = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(mask, p + 2 * N), 2);
                v = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(mask, p + 3 * N), 3);
                dots = dot8(dots, _mm512_permutexvar_epi8(idx, v), broadcast4(xm + 8 * b), broadcast4(xm + 8 * b + 4));
            }
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_maskz_loadu_ps(mask, scales + g * N + n0), acc);
            acc_offsets = _mm512_fmadd_ps(_mm512_set1_ps(sums[m * G + g]),
                                          _mm512_maskz_loadu_ps(mask, offsets + g * N + n0), acc_offsets);
        }
        _mm512_mask_storeu_ps(y + m * N + n0, mask, _mm512_fmadd_ps(acc, _mm512_set1_ps(step[m]), acc_offsets));
    }
}
#endif

static void quantize_rows(const float* x, int8_t* xq, float* step, float* xsums, int64_t M, int64_t K,
                          bool evens_first);

/* The sum of each group of `group` inputs of each row of x (group a multiple of 8). */
static void group_sums(const float* x, float* sums, int64_t M, int64_t K, int64_t group) {
#if READY
    for (int64_t m = 0; m < M; m++)
        for (int64_t g = 0; g < K / group; g++) {
            __m512 acc = _mm512_setzero_ps();
            for (int64_t k = g * group; k < (g + 1) * group; k += 16) {
                const int64_t left = (g + 1) * group - k;
                acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1),
                                                               x + m * K + k));
            }
            sums[m * (K / group) + g] = _mm512_reduce_add_ps(acc);
        }
#endif
}

static void int4_kernel(const float* x, const uint8_t* w, const float* scales, const float* offsets, float* y,
                        int64_t M, int64_t N, int64_t K, int64_t group) {
#if READY
    int8_t* xq = (int8_t*)aligned_alloc(64, (size_t)((M * K + 63) / 64 * 64));
    float* step = (float*)aligned_alloc(64, (size_t)((M * (2 + K / group) * 4 + 63) / 64 * 64));
    float *xsums = step + M, *sums = step + 2 * M;
    quantize_rows(x, xq, step, xsums, M, K, true);
    group_sums(x, sums, M, K, group);
    const int64_t wide = N / 64, tiles = wide + (N - 64 * wide + 15) / 16;
    #pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        if (t < wide)
            tile64(xq, step, sums, w, scales, offsets, y, M, N, K, group, 64 * t);
        else
            tile16(xq, step, sums, w, scales, offsets, y, M, N, K, group, 64 * wide + 16 * (t - wide));
    }
    free(xq);
    free(step);
#endif
}

/* The int8 product, y (M, N) = step[m] * scales[n] * sum_k xq[m, k] * w[n, k], from the row-major
   weight (N, K) int8 as `Int8Linear` stores it. vpdpbusd multiplies unsigned by signed bytes, so
   each weight byte is read as w + 128 (its top bit flipped: one xor) against the signed inputs,
   and 128 * sum_k xq[m, k] (`xsums`) is taken off at the end. 16 outputs at a time: 16 int32
   accumulators of 16 lanes each, summed into one register of 16 outputs by a tree of 15 adds. */
#if READY
static inline __m512i sum16(__m512i* a) {
    __m512i t[8], u[4], v[2];
    for (int i = 0; i < 8; i++)
        t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]), _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
    for (int i = 0; i < 2; i++)
        v[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2 * i], u[2 * i + 1], 0x88), _mm512_shuffle_i32x4(u[2 * i], u[2 * i + 1], 0xDD));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(v[0], v[1], 0x88), _mm512_shuffle_i32x4(v[0], v[1], 0xDD));
}

static void rows16(const int8_t* xq, const float* step, const float* xsums, const int8_t* w, const float* scales,
                   float* y, int64_t M, int64_t N, int64_t K, int64_t n0) {
    const int64_t left = N - n0, full = K / 64;
    const __mmask16 out_mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    const __mmask64 tail = (__mmask64)((K % 64) ? ((1ull << (K % 64)) - 1) : 0);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const int8_t* row[16];
    for (int r = 0; r < 16; r++) row[r] = w + (n0 + (r < left ? r : 0)) * K;   /* rows past N: repeat one, not stored */
    const __m512 scale = _mm512_maskz_loadu_ps(out_mask, scales + n0);
    for (int64_t m = 0; m < M; m++) {
        const int8_t* xm = xq + m * K;
        __m512i acc[16];
        for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_si512();
        for (int r = 0; r < 16; r++)          /* row by row: the tile's 16 x K bytes are read in order */
            for (int64_t b = 0; b < full; b++)
                acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_xor_si512(_mm512_loadu_si512((const void*)(row[r] + 64 * b)), flip),
                                             _mm512_loadu_si512((const void*)(xm + 64 * b)));
        if (tail) {          /* inputs past K load as 0, so their flipped weights (128) add nothing */
            const __m512i xv = _mm512_maskz_loadu_epi8(tail, xm + 64 * full);
            for (int r = 0; r < 16; r++)
                acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, row[r] + 64 * full), flip), xv);
        }
        const __m512i dots = _mm512_sub_epi32(sum16(acc), _mm512_set1_epi32((int32_t)xsums[m] * 128));
        _mm512_mask_storeu_ps(y + m * N + n0, out_mask,
                              _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dots), scale), _mm512_set1_ps(step[m])));
    }
}
#endif

/* Each row of x quantized to int8 as `quantized.int8_product` does it (its largest magnitude at
   127, rounded half to even), with its step and the sum of its int8 values; `evens_first`: each
   block of 8 inputs stored as its 4 even inputs, then its 4 odd ones (the int4 kernel's order,
   K a multiple of 8). */
static void quantize_rows(const float* x, int8_t* xq, float* step, float* xsums, int64_t M, int64_t K, bool evens_first) {
#if READY
    const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    for (int64_t m = 0; m < M; m++) {
        const float* xm = x + m * K;
        __m512 top = _mm512_setzero_ps();
        for (int64_t k = 0; k < K; k += 16) {
            const __mmask16 mask = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, xm + k)));
        }
        float amax = _mm512_reduce_max_ps(top);
        const __m512 s = _mm512_set1_ps((amax > 1e-12f ? amax : 1e-12f) / 127.0f);
        __m512i sums = _mm512_setzero_si512();
        for (int64_t k = 0; k < K; k += 16) {
            const __mmask16 mask = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            __m512 v = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(mask, xm + k), s),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
            const __m512i q = _mm512_maskz_cvtps_epi32(mask, v);
            sums = _mm512_add_epi32(sums, q);
            const __m128i bytes = _mm512_cvtsepi32_epi8(q);
            _mm_mask_storeu_epi8(xq + m * K + k, mask, evens_first ? _mm_shuffle_epi8(bytes, order) : bytes);
        }
        step[m] = _mm512_cvtss_f32(s);
        xsums[m] = (float)_mm512_reduce_add_epi32(sums);
    }
#endif
}

static void int8_kernel(const float* x, const int8_t* w, const float* scales, float* y, int64_t M, int64_t N, int64_t K) {
#if READY
    int8_t* xq = (int8_t*)aligned_alloc(64, (size_t)((M * K + 63) / 64 * 64));
    float* step = (float*)aligned_alloc(64, (size_t)((2 * M * 4 + 63) / 64 * 64));
    float* xsums = step + M;
    quantize_rows(x, xq, step, xsums, M, K, false);
    const int64_t tiles = (N + 15) / 16;
    #pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tiles; t++)
        rows16(xq, step, xsums, w, scales, y, M, N, K, 16 * t);
    free(xq);
    free(step);
#endif
}

/* The operator, registered with PyTorch's dispatcher from C++ (its stable ABI), so a compiled
   step calls it without going through Python. */
using torch::stable::Tensor;
using torch::headeronly::ScalarType;

static bool column_major(const Tensor& t) {
    return t.dim() == 2 && t.stride(0) == 1 && (t.size(1) == 1 || t.stride(1) == t.size(0));
}

static Tensor int4_product(Tensor x, Tensor weight, Tensor scales, Tensor offsets) {
    STD_TORCH_CHECK(READY, "lmforge::int4_product needs AVX-512 VNNI and VBMI");
    STD_TORCH_CHECK(x.dim() == 2 && x.scalar_type() == ScalarType::Float && weight.scalar_type() == ScalarType::Byte
                    && scales.scalar_type() == ScalarType::Float && offsets.scalar_type() == ScalarType::Float,
                    "lmforge::int4_product: float32 inputs, scales and offsets, uint8 weight");
    STD_TORCH_CHECK(column_major(weight) && column_major(scales) && column_major(offsets),
                    "lmforge::int4_product: weight, scales and offsets laid out column-major (inference_layout)");
    const int64_t M = x.size(0), K = x.size(1), N = weight.size(0), G = scales.size(1);
    STD_TORCH_CHECK(weight.size(1) * 2 == K && K % 8 == 0 && G > 0 && K % G == 0 && (K / G) % 8 == 0,
                    "lmforge::int4_product: inputs in eights, groups of a multiple of 8 inputs");
    x = torch::stable::contiguous(x);
    Tensor y = torch::stable::new_empty(x, {M, N});
    int4_kernel((const float*)x.data_ptr(), (const uint8_t*)weight.data_ptr(), (const float*)scales.data_ptr(),
                (const float*)offsets.data_ptr(), (float*)y.data_ptr(), M, N, K, K / G);
    return y;
}

static Tensor int8_product(Tensor x, Tensor weight, Tensor scales) {
    STD_TORCH_CHECK(READY, "lmforge::int8_product needs AVX-512 VNNI and VBMI");
    STD_TORCH_CHECK(x.dim() == 2 && x.scalar_type() == ScalarType::Float && weight.scalar_type() == ScalarType::Char
                    && scales.scalar_type() == ScalarType::Float,
                    "lmforge::int8_product: float32 inputs and scales, int8 weight");
    STD_TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous() && scales.is_contiguous() && weight.size(1) == x.size(1)
                    && scales.numel() == weight.size(0), "lmforge::int8_product: a row-major (out, in) weight, (out,) scales");
    x = torch::stable::contiguous(x);
    const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
    Tensor y = torch::stable::new_empty(x, {M, N});
    int8_kernel((const float*)x.data_ptr(), (const int8_t*)weight.data_ptr(), (const float*)scales.data_ptr(),
                (float*)y.data_ptr(), M, N, K);
    return y;
}

STABLE_TORCH_LIBRARY_FRAGMENT(lmforge, m) {
    m.def("int4_product(Tensor x, Tensor weight, Tensor scales, Tensor offsets) -> Tensor");
    m.def("int8_product(Tensor x, Tensor weight, Tensor scales) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(lmforge, CPU, m) {
    m.impl("int4_product", TORCH_BOX(&int4_product));
    m.impl("int8_product", TORCH_BOX(&int8_product));
}
