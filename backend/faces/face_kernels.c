/* The face models' operators as one native call per batch: NHWC float32 maps whose channels
 * are padded with zeros to a multiple of 16, so that every loop over channels is whole
 * vectors. backend/faces/native.py builds the program (one Op per fused operator) from a
 * TFLite module's plan, compiles this file with the machine's C compiler and calls `restora_run`.
 *
 * Why it exists: through PyTorch each oneDNN call of these small models costs some 40 us
 * of dispatch, about a hundred calls a pass, more than the arithmetic of most of them.
 * Here a pass is one call: the batch runs image by image (a 192x192 window's maps stay in
 * the core's cache), each operator split by output rows over the threads, with a barrier
 * between operators.
 *
 * GCC / Clang vector extensions, not intrinsics: -march=native lowers them to AVX-512, AVX2
 * or NEON as the machine has them. */

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t i16v __attribute__((vector_size(64), aligned(4)));

#define LANES 16
#define NVMAX 4 /* vectors of output channels per register tile: 64 channels */
#define MAX_THREADS 64
#define ZEROS 8192

enum { OP_CONV = 0, OP_DEPTHWISE = 1, OP_MAXPOOL = 2, OP_ADD = 3, OP_PRELU = 4,
       OP_RESIZE = 5, OP_WIDEN = 6 };
enum { ACT_NONE = 0, ACT_RELU = 1, ACT_N1_TO_1 = 2, ACT_RELU6 = 3, ACT_PRELU = 4 };

/* Mirrored by native.py's OpStruct: keep the two in step. */
typedef struct {
    int32_t kind, x, other, out;
    int32_t h, w, c, cs;       /* input: rows, columns, channels read, pitch of a pixel */
    int32_t oh, ow, oc;        /* output: rows, columns, channels (= its pitch, 16k) */
    int32_t kh, kw, sh, sw, pt, pl;
    int32_t act, other_c;      /* other_c: the added value's pitch (16k, <= oc); 0: no add */
    int32_t pad_;
    const float *weight, *bias, *alpha;
} Op;

static const float zeros[ZEROS];

static inline v16 splat(float s) { return (v16){0} + s; }
static inline v16 load(const float *p) { return *(const v16 *)p; }
static inline void store(float *p, v16 v) { *(v16 *)p = v; }
static inline v16 select(i16v m, v16 a, v16 b) {
    return (v16)(((i16v)a & m) | ((i16v)b & ~m));
}
static inline v16 vmax(v16 a, v16 b) { return select(a > b, a, b); }
static inline v16 vmin(v16 a, v16 b) { return select(a < b, a, b); }

static inline v16 activate(v16 v, int act, const float *alpha) {
    switch (act) {
    case ACT_RELU: return vmax(v, splat(0.f));
    case ACT_N1_TO_1: return vmin(vmax(v, splat(-1.f)), splat(1.f));
    case ACT_RELU6: return vmin(vmax(v, splat(0.f)), splat(6.f));
    case ACT_PRELU: return select(v > splat(0.f), v, v * load(alpha));
    default: return v;
    }
}

/* --- convolution: a tile of mr output pixels by nv vectors of output channels ------------- */

/* Weights of a convolution: blocks of 64 output channels (the last one narrower), each
 * [tap][input channel][its width]. A tile keeps mr x nv accumulators in registers, mr chosen
 * per nv (tile_pixels) so that there are some 24: enough independent FMAs to hide their
 * latency, few enough to leave registers for the weights (32 with AVX-512). */
#define MR_MAX 12
static inline int tile_pixels(int nv) { return nv <= 2 ? 12 : nv == 3 ? 8 : 6; }

static inline __attribute__((always_inline)) void conv_tile(
    const Op *op, const int nv, const int mr, int cb, const float *x, float *y,
    const float *other, int p, int npix)
{
    const int c = op->c, width = nv * LANES, co0 = cb * NVMAX * LANES;
    const float *wblock = op->weight + (size_t)co0 * op->kh * op->kw * c;
    v16 acc[MR_MAX][NVMAX];
    for (int v = 0; v < nv; v++) {
        v16 b = op->bias ? load(op->bias + co0 + v * LANES) : splat(0.f);
        for (int r = 0; r < mr; r++) acc[r][v] = b;
    }
    const int pointwise = op->kh == 1 && op->kw == 1 && op->sh == 1 && op->sw == 1 &&
                          op->pt == 0 && op->pl == 0;
    int oy[MR_MAX], ox[MR_MAX];
    for (int r = 0; r < mr; r++) {
        int q = p + (r < npix ? r : npix - 1); /* a short tile repeats its last pixel */
        oy[r] = q / op->ow, ox[r] = q % op->ow;
    }
    for (int ky = 0; ky < op->kh; ky++) {
        for (int kx = 0; kx < op->kw; kx++) {
            const float *src[MR_MAX];
            for (int r = 0; r < mr; r++) {
                if (pointwise) {
                    src[r] = x + (size_t)(p + (r < npix ? r : npix - 1)) * op->cs;
                    continue;
                }
                int iy = oy[r] * op->sh - op->pt + ky, ix = ox[r] * op->sw - op->pl + kx;
                src[r] = (iy >= 0 && iy < op->h && ix >= 0 && ix < op->w)
                    ? x + ((size_t)iy * op->w + ix) * op->cs : zeros;
            }
            const float *wt = wblock + (size_t)(ky * op->kw + kx) * c * width;
            for (int ci = 0; ci < c; ci++, wt += width) {
                v16 wv[NVMAX];
                for (int v = 0; v < nv; v++) wv[v] = load(wt + v * LANES);
                for (int r = 0; r < mr; r++) {
                    v16 b = splat(src[r][ci]);
                    for (int v = 0; v < nv; v++) acc[r][v] += b * wv[v];
                }
            }
        }
    }
    for (int r = 0; r < mr; r++) { /* to mr, not npix: constant indices keep acc in registers */
        if (r >= npix) break;
        size_t q = (size_t)p + r;
        for (int v = 0; v < nv; v++) {
            int co = co0 + v * LANES;
            v16 s = acc[r][v];
            if (co < op->other_c) s += load(other + q * op->other_c + co);
            store(y + q * op->oc + co, activate(s, op->act, op->alpha + co));
        }
    }
}

static void conv_pixels(const Op *op, const float *x, float *y, const float *other, int p0,
                        int p1)
{
    for (int cb = 0; cb * NVMAX * LANES < op->oc; cb++) {
        int nv = (op->oc - cb * NVMAX * LANES) / LANES;
        nv = nv < NVMAX ? nv : NVMAX;
        int mr = tile_pixels(nv);
        for (int p = p0; p < p1; p += mr) {
            int npix = p1 - p < mr ? p1 - p : mr;
            switch (nv) {
            case 1: conv_tile(op, 1, 12, cb, x, y, other, p, npix); break;
            case 2: conv_tile(op, 2, 12, cb, x, y, other, p, npix); break;
            case 3: conv_tile(op, 3, 8, cb, x, y, other, p, npix); break;
            default: conv_tile(op, 4, 6, cb, x, y, other, p, npix); break;
            }
        }
    }
}

/* --- depthwise convolution and max-pooling: vectors of channels, taps inside the map ---- */

static void window_rows(const Op *op, const float *x, float *y, int r0, int r1, int pool)
{
    const int oc = op->oc;
    for (int oy = r0; oy < r1; oy++) {
        int top = oy * op->sh - op->pt;
        int ky0 = top < 0 ? -top : 0, ky1 = op->h - top < op->kh ? op->h - top : op->kh;
        for (int ox = 0; ox < op->ow; ox++) {
            int left = ox * op->sw - op->pl;
            int kx0 = left < 0 ? -left : 0, kx1 = op->w - left < op->kw ? op->w - left : op->kw;
            float *out = y + ((size_t)oy * op->ow + ox) * oc;
            for (int c = 0; c < oc; c += LANES) {
                v16 acc = pool ? splat(-INFINITY) : op->bias ? load(op->bias + c) : splat(0.f);
                for (int ky = ky0; ky < ky1; ky++) {
                    const float *row = x + ((size_t)(top + ky) * op->w + left) * op->cs + c;
                    const float *wrow = pool ? 0 : op->weight + (size_t)ky * op->kw * oc + c;
                    for (int kx = kx0; kx < kx1; kx++) {
                        v16 v = load(row + (size_t)kx * op->cs);
                        acc = pool ? vmax(acc, v) : acc + v * load(wrow + (size_t)kx * oc);
                    }
                }
                store(out + c, activate(acc, op->act, op->alpha + c));
            }
        }
    }
}

/* A 3x3 depthwise convolution, the face models' own: per vector of channels its nine weights
 * stay in registers across a row, and the columns whose taps all lie inside the map run
 * without bounds checks. */
static void depthwise3_rows(const Op *op, const float *x, float *y, int r0, int r1)
{
    const int oc = op->oc, cs = op->cs, w = op->w, sw = op->sw;
    /* the columns whose three taps lie inside the map: ox*sw - pl >= 0, ox*sw - pl + 3 <= w */
    int lo = (op->pl + sw - 1) / sw, hi = (w - 3 + op->pl) / sw + 1;
    if (hi > op->ow) hi = op->ow;
    if (lo > hi) lo = hi;
    for (int oy = r0; oy < r1; oy++) {
        int top = oy * op->sh - op->pt;
        int ky0 = top < 0 ? -top : 0, ky1 = op->h - top < 3 ? op->h - top : 3;
        for (int c = 0; c < oc; c += LANES) {
            v16 wv[9];
            for (int t = 0; t < 9; t++) wv[t] = load(op->weight + (size_t)t * oc + c);
            v16 b = op->bias ? load(op->bias + c) : splat(0.f);
            const float *base = x + (size_t)top * w * cs + c;
            float *out = y + (size_t)oy * op->ow * oc + c;
            for (int ox = 0; ox < op->ow; ox++) {
                if (ox == lo && ky0 == 0 && ky1 == 3) { /* the interior: no checks */
                    for (; ox < hi; ox++) {
                        const float *q = base + (size_t)(ox * sw - op->pl) * cs;
                        v16 acc = b;
                        for (int ky = 0; ky < 3; ky++, q += (size_t)w * cs)
                            for (int kx = 0; kx < 3; kx++)
                                acc += load(q + (size_t)kx * cs) * wv[ky * 3 + kx];
                        store(out + (size_t)ox * oc, activate(acc, op->act, op->alpha + c));
                    }
                    if (ox >= op->ow) break;
                }
                int left = ox * sw - op->pl;
                int kx0 = left < 0 ? -left : 0, kx1 = w - left < 3 ? w - left : 3;
                v16 acc = b;
                for (int ky = ky0; ky < ky1; ky++)
                    for (int kx = kx0; kx < kx1; kx++)
                        acc += load(base + ((size_t)ky * w + left + kx) * cs) * wv[ky * 3 + kx];
                store(out + (size_t)ox * oc, activate(acc, op->act, op->alpha + c));
            }
        }
    }
}

/* --- element-wise operators, the resize and the channel widening ---------------------- */

static void elementwise_rows(const Op *op, const float *x, const float *other, float *y, int r0,
                             int r1)
{
    const int oc = op->oc;
    for (size_t p = (size_t)r0 * op->ow; p < (size_t)r1 * op->ow; p++) {
        for (int c = 0; c < oc; c += LANES) {
            /* a widened map's new channels are zeros: its input has no such channels */
            v16 v = op->kind == OP_WIDEN && c >= op->c ? splat(0.f) : load(x + p * op->cs + c);
            if (op->kind == OP_ADD) v += load(other + p * op->other_c + c);
            store(y + p * oc + c, activate(v, op->act, op->alpha + c));
        }
    }
}

/* TFLite's half-pixel bilinear resize, as PyTorch's align_corners=False computes it. */
static void source_index(int dst, int in, int out, int *i0, int *i1, float *frac)
{
    float s = ((float)in / (float)out) * ((float)dst + 0.5f) - 0.5f;
    if (s < 0.f) s = 0.f;
    int i = (int)s;
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *frac = s - (float)i;
}

static void resize_rows(const Op *op, const float *x, float *y, int r0, int r1)
{
    const int oc = op->oc;
    for (int oy = r0; oy < r1; oy++) {
        int y0, y1;
        float fy;
        source_index(oy, op->h, op->oh, &y0, &y1, &fy);
        for (int ox = 0; ox < op->ow; ox++) {
            int x0, x1;
            float fx;
            source_index(ox, op->w, op->ow, &x0, &x1, &fx);
            const float *a = x + ((size_t)y0 * op->w + x0) * op->cs;
            const float *b = x + ((size_t)y0 * op->w + x1) * op->cs;
            const float *c0 = x + ((size_t)y1 * op->w + x0) * op->cs;
            const float *d = x + ((size_t)y1 * op->w + x1) * op->cs;
            float *out = y + ((size_t)oy * op->ow + ox) * oc;
            for (int c = 0; c < oc; c += LANES) {
                v16 top = load(a + c) * splat(1.f - fx) + load(b + c) * splat(fx);
                v16 bot = load(c0 + c) * splat(1.f - fx) + load(d + c) * splat(fx);
                store(out + c, activate(top * splat(1.f - fy) + bot * splat(fy), op->act,
                                        op->alpha + c));
            }
        }
    }
}

/* --- the program over the threads -------------------------------------------------------- */

typedef struct {
    atomic_int arrived;
    atomic_int phase;
    int threads;
} Barrier;

#ifndef _OPENMP
static void barrier_wait(Barrier *b)
{
    int phase = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == b->threads - 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->phase, 1, memory_order_release);
        return;
    }
    for (int spins = 0; atomic_load_explicit(&b->phase, memory_order_acquire) == phase;) {
        if (++spins > 200) sched_yield(); /* the other vCPU may be descheduled */
    }
}
#endif

static inline void sync_threads(Barrier *b)
{
#ifdef _OPENMP
    (void)b;
#pragma omp barrier
#else
    barrier_wait(b);
#endif
}

typedef struct {
    const Op *ops;
    int nops, batch, threads, index;
    float *const *bufs;
    const int64_t *stride;
    Barrier *barrier;
    atomic_int *gate; /* 0: wait, 1: run, -1: return at once */
} Work;

static void run_op(const Work *wk, const Op *op, int item)
{
    float *x = wk->bufs[op->x] + wk->stride[op->x] * item;
    float *y = wk->bufs[op->out] + wk->stride[op->out] * item;
    const float *other = op->other >= 0 ? wk->bufs[op->other] + wk->stride[op->other] * item : 0;
    const int t = wk->index, n = wk->threads;
    if (op->kind == OP_CONV) {
        int total = op->oh * op->ow, blocks = (total + 3) / 4;
        int p0 = blocks * t / n * 4, p1 = blocks * (t + 1) / n * 4;
        conv_pixels(op, x, y, other, p0, p1 < total ? p1 : total);
        return;
    }
    int r0 = op->oh * t / n, r1 = op->oh * (t + 1) / n;
    switch (op->kind) {
    case OP_DEPTHWISE:
        if (op->kh == 3 && op->kw == 3) depthwise3_rows(op, x, y, r0, r1);
        else window_rows(op, x, y, r0, r1, 0);
        break;
    case OP_MAXPOOL: window_rows(op, x, y, r0, r1, 1); break;
    case OP_RESIZE: resize_rows(op, x, y, r0, r1); break;
    default: elementwise_rows(op, x, other, y, r0, r1); break;
    }
}

static void *worker(void *arg)
{
    const Work *wk = arg;
    while (wk->gate && atomic_load_explicit(wk->gate, memory_order_acquire) == 0) sched_yield();
    if (wk->gate && atomic_load_explicit(wk->gate, memory_order_acquire) < 0) return 0;
    for (int item = 0; item < wk->batch; item++) {
        for (int k = 0; k < wk->nops; k++) {
            run_op(wk, &wk->ops[k], item);
            if (wk->threads > 1) sync_threads(wk->barrier);
        }
    }
    return 0;
}

int restora_op_size(void) { return (int)sizeof(Op); }

/* Run the program over `batch` images. bufs[i] is value i's memory; stride[i] its elements
 * per image (0: scratch that every image reuses). Returns 0, or -1 where a thread could not
 * start (then nothing was run: the caller runs the program on one thread). */
#ifdef _OPENMP
#include <omp.h>

/* Built against the OpenMP runtime PyTorch has loaded, the program runs on PyTorch's own
 * threads: they are awake (spinning) right after PyTorch's last operator, where threads of
 * our own would first wait for the CPU those spinning threads hold. */
int restora_run(const Op *ops, int nops, float *const *bufs, const int64_t *stride, int batch,
                int threads)
{
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        Work wk = {ops, nops, batch, omp_get_num_threads(), omp_get_thread_num(), bufs, stride,
                   0, 0};
        worker(&wk);
    }
    return 0;
}
#else
int restora_run(const Op *ops, int nops, float *const *bufs, const int64_t *stride, int batch,
                int threads)
{
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    Barrier barrier = {0, 0, threads};
    atomic_int gate = 0;
    Work work[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    for (int t = 0; t < threads; t++)
        work[t] = (Work){ops, nops, batch, threads, t, bufs, stride, &barrier, &gate};
    int started = 1;
    for (; started < threads; started++) {
        if (pthread_create(&ids[started], 0, worker, &work[started])) break;
    }
    if (started < threads) { /* a short pool would wait at the barrier forever */
        atomic_store_explicit(&gate, -1, memory_order_release);
        for (int t = 1; t < started; t++) pthread_join(ids[t], 0);
        return -1;
    }
    atomic_store_explicit(&gate, 1, memory_order_release);
    worker(&work[0]);
    for (int t = 1; t < threads; t++) pthread_join(ids[t], 0);
    return 0;
}
#endif
