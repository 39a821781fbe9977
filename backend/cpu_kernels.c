/* Element-wise passes that PyTorch's CPU operators run slower than memory allows, for
 * backend/cpu_fusion.py; compiled on the user's machine by backend/native_build.py.
 *
 * restora_prelu_: a PReLU in place on a map, channels-last (per pixel, `channels` values in a
 * row, one slope each) or NCHW. In bf16 PyTorch's kernel costs 2-3x a ReLU, bound by its
 * conversions; here a bf16 value widens to float by a shift (exact), the slope is applied in
 * float, and the result is rounded back to nearest-even, so the bits are those of
 * torch.nn.functional.prelu for every finite value. The pixels are split over PyTorch's own
 * OpenMP threads where it has them (see face_kernels.c for why its threads, not our own).
 *
 * restora_interleave_phases_: the last step of ESRGAN's folded upsampling blocks
 * (backend/cpu_fusion.py, FusedNearestUpConv): four maps held side by side in the channels of
 * one channels-last map, interleaved into one of twice the size. PyTorch's strided copy of the
 * same took 2x a nearest upsample of that size.
 *
 * GCC / Clang vector extensions: -march=native lowers them to AVX-512, AVX2 or NEON. */

#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float f16v __attribute__((vector_size(64), aligned(2)));
typedef uint32_t u16v __attribute__((vector_size(64), aligned(2)));
typedef uint16_t h16v __attribute__((vector_size(32), aligned(2)));
typedef int32_t m16v __attribute__((vector_size(64)));

#define LANES 16
#define MAX_CHANNELS 4096

static inline f16v widen(h16v h) {
    u16v bits = __builtin_convertvector(h, u16v) << 16;
    f16v f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline h16v narrow(f16v f) {
    u16v bits;
    memcpy(&bits, &f, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u); /* round to nearest, ties to even */
    return __builtin_convertvector(bits >> 16, h16v);
}

static inline f16v prelu_vec(f16v v, f16v slope) {
    m16v positive = v > (f16v){0};
    f16v scaled = v * slope;
    return (f16v)(((m16v)v & positive) | ((m16v)scaled & ~positive));
}

static inline float prelu_one(float v, float slope) { return v > 0.f ? v : v * slope; }

static inline uint16_t narrow_one(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float widen_one(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static void prelu_bf16_rows(uint16_t *x, int64_t p0, int64_t p1, int channels,
                            const float *slope) {
    const int whole = channels / LANES * LANES;
    for (int64_t p = p0; p < p1; p++) {
        uint16_t *row = x + p * channels;
        for (int c = 0; c < whole; c += LANES) {
            h16v h;
            memcpy(&h, row + c, sizeof h);
            f16v s;
            memcpy(&s, slope + c, sizeof s);
            h = narrow(prelu_vec(widen(h), s));
            memcpy(row + c, &h, sizeof h);
        }
        for (int c = whole; c < channels; c++)
            row[c] = narrow_one(prelu_one(widen_one(row[c]), slope[c]));
    }
}

static void prelu_f32_rows(float *x, int64_t p0, int64_t p1, int channels, const float *slope) {
    const int whole = channels / LANES * LANES;
    for (int64_t p = p0; p < p1; p++) {
        float *row = x + p * channels;
        for (int c = 0; c < whole; c += LANES) {
            f16v v, s;
            memcpy(&v, row + c, sizeof v);
            memcpy(&s, slope + c, sizeof s);
            v = prelu_vec(v, s);
            memcpy(row + c, &v, sizeof v);
        }
        for (int c = whole; c < channels; c++) row[c] = prelu_one(row[c], slope[c]);
    }
}

static void prelu_planes(void *x, int dtype, int64_t p0, int64_t p1, int channels,
                         int64_t plane, const float *slope) {
    /* planes p0..p1 of an NCHW map: plane p is channel p % channels, one slope for it all */
    for (int64_t p = p0; p < p1; p++) {
        const float s = slope[p % channels];
        if (dtype == 1) {
            uint16_t *v = (uint16_t *)x + p * plane;
            for (int64_t i = 0; i < plane; i++) v[i] = narrow_one(prelu_one(widen_one(v[i]), s));
        } else {
            float *v = (float *)x + p * plane;
            for (int64_t i = 0; i < plane; i++) v[i] = prelu_one(v[i], s);
        }
    }
}

int restora_cpu_kernels_version(void) { return 2; }

/* x: a contiguous map of `count` rows of `channels` values (channels-last: a row a pixel;
 * planes != 0: NCHW, `count` planes of `plane` values each, plane k of channel k % channels),
 * bf16 (dtype 1) or float32 (dtype 0); slope: `channels` floats. Returns 0, or -1 for
 * arguments it does not take (nothing is written then). */
int restora_prelu_(void *x, int64_t count, int channels, int64_t plane, const float *slope,
                   int dtype, int threads) {
    if (!x || !slope || count < 0 || channels < 1 || channels > MAX_CHANNELS || plane < 0)
        return -1;
    if (dtype != 0 && dtype != 1) return -1;
    const int64_t values = plane ? count * plane : count * channels;
    if (threads < 1) threads = 1;
    /* below some 16k values a second thread's start costs more than it saves */
    if (values < 16384) threads = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
#else
    {
        const int t = 0, n = 1;
#endif
        const int64_t p0 = count * t / n, p1 = count * (t + 1) / n;
        if (plane)
            prelu_planes(x, dtype, p0, p1, channels, plane, slope);
        else if (dtype == 1)
            prelu_bf16_rows((uint16_t *)x, p0, p1, channels, slope);
        else
            prelu_f32_rows((float *)x, p0, p1, channels, slope);
    }
    return 0;
}

typedef char chunk64 __attribute__((vector_size(64), aligned(1)));

static inline void copy_pixel(char *dst, const char *src, int64_t bytes) {
    if (bytes % 64 == 0) {
        for (int64_t k = 0; k < bytes; k += 64) {
            chunk64 v;
            memcpy(&v, src + k, 64);
            memcpy(dst + k, &v, 64);
        }
    } else {
        memcpy(dst, src, (size_t)bytes);
    }
}

/* src: n x (h+1) x (w+1) pixels of 4c values, `elem` bytes each; dst: n x 2h x 2w pixels of c
 * values, dst[b][2i+dy][2j+dx] = src[b][i+dy][j+dx][(2 dy + dx) c .. (2 dy + dx + 1) c].
 * Returns 0, or -1 for arguments it does not take (nothing is written then). */
int restora_interleave_phases_(const void *src, void *dst, int64_t n, int64_t h, int64_t w,
                               int64_t c, int elem, int threads) {
    if (!src || !dst || n < 0 || h < 0 || w < 0 || c < 1 || elem < 1 || elem > 8) return -1;
    const int64_t bytes = c * elem, rows = n * 2 * h;
    if (threads < 1) threads = 1;
    if (rows * 2 * w * bytes < (1 << 18)) threads = 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / (2 * h), o = r % (2 * h), i = o / 2, dy = o % 2;
        const char *row = (const char *)src + ((b * (h + 1) + i + dy) * (w + 1)) * 4 * bytes;
        char *out = (char *)dst + r * 2 * w * bytes;
        for (int64_t j = 0; j < w; j++) {
            copy_pixel(out + (2 * j) * bytes, row + j * 4 * bytes + (2 * dy) * bytes, bytes);
            copy_pixel(out + (2 * j + 1) * bytes, row + (j + 1) * 4 * bytes + (2 * dy + 1) * bytes,
                       bytes);
        }
    }
    return 0;
}
