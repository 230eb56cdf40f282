/*
 * lnlab fused CPU kernels for the LayerNorm family.
 *
 * One forward and one backward kernel cover every variant of the zoo:
 *   - groups G >= 1: each row of N features is cut into G contiguous groups of D = N / G
 *     features, each normalized on its own (G = 1 is LayerNorm, G > 1 is LN-G);
 *   - center = 0 gives RMSNorm (no mean subtraction, rms instead of std);
 *   - detach_mean / detach_std drop the gradient through mu / sigma (DetachNorm, Xu et al.);
 *   - ada = 1 multiplies the normalized value by C (1 - k y), that factor detached (AdaNorm);
 *   - optional per-feature weight (gain) and bias.
 *
 * Why a hand-written kernel: composite eager PyTorch for these variants is 5-9x slower than
 * the native LayerNorm on CPU, because it makes many passes over the data. Each kernel here
 * reads a row once from memory, keeps it in L1 for the second pass, and (backward) fuses dx
 * with per-thread partial sums of the weight and bias gradients, like ATen's LayerNorm.
 *
 * Threads: OpenMP.  The library is loaded after torch, so libgomp.so.1 resolves to the copy
 * torch already loaded and both share one thread pool (torch.set_num_threads applies).
 * Statistics use a corrected two-pass formula on the cached row (sum; then the sums of the
 * deviations and of their squares, whose first removes the rounding error of the mean),
 * vectorised with per-lane partial sums in the input precision; accuracy matches ATen's.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>

#define PAR_MIN_ELEMS 32768
/* LN-G with groups of at most SMALL_D_MAX features runs row by row (lnk_forward), with the
   group size a compile-time constant for the sizes listed in SMALL_D_CASES (others: runtime).
   Its sums use explicit vectors of LANES partial sums (GCC vector extension), then a pairwise
   sum in registers. Why not "omp simd reduction" as for whole rows: GCC fully unrolls a loop
   with a small constant trip count before vectorising it, and the reduction becomes an
   in-order chain of D dependent additions; with a runtime D the vector loop's set-up and
   tail cost about as much. Either way a group of 16 took 3-4x the time of 16 features of a
   LayerNorm row. Measured, 1 thread, 128x128 with G = 8: forward 30 -> 7.7 us, backward
   20 -> 8.6 us (G = 1: 7.3 / 7.9); 64x256: 16-20 -> 5.1 us, 13-17 -> 6.6 us. Not chosen: at
   small shapes, x.view(M, G, D) through native F.layer_norm and then the affine costs 2.3-3.2x
   native LayerNorm forward+backward (three ops and their autograd), this kernel 1.05x. */
#define SMALL_D_MAX 128
#define SMALL_D_CASE(n, ...) case n: { const int64_t DLIT = n; __VA_ARGS__; break; }
#define SMALL_D_CASES(...)                                                                     \
    SMALL_D_CASE(8, __VA_ARGS__) SMALL_D_CASE(16, __VA_ARGS__) SMALL_D_CASE(32, __VA_ARGS__)   \
    SMALL_D_CASE(64, __VA_ARGS__) SMALL_D_CASE(96, __VA_ARGS__) SMALL_D_CASE(128, __VA_ARGS__)
#define LANES 8
/* The pairwise sum of the LANES = 8 elements of a vector, in registers. */
#define VEC_SUM8(v)                                                                            \
    ({ __typeof__(v) a_ = (v) + __builtin_shufflevector((v), (v), 4, 5, 6, 7, 4, 5, 6, 7);     \
       a_ += __builtin_shufflevector(a_, a_, 2, 3, 2, 3, 2, 3, 2, 3);                          \
       a_[0] + a_[1]; })
/* 1/sigma in the input precision, as ATen's CPU LayerNorm (float: sqrtss, no double detour) */
#define SQRT_float sqrtf
#define SQRT_double sqrt

/* The rows [r0, r1) of lnk_backward, group by group, with literal flags (see bwd_row). */
#define BWD_CALL(SUFFIX, DD, SMALL, HW, ADA, NP)                                               \
    bwd_row_##SUFFIX(xr, dyr, wr, mu, r, dxr, pwr, pbr, DD, HW, ADA, NP, Ct, kt, use_c1,       \
                     use_c2, SMALL)
#define BWD_ROWS(T, SUFFIX, DD, SMALL)                                                            \
    for (int64_t row = r0; row < r1; ++row) {                                                  \
        for (int64_t g = 0, u = row * G; g < G; ++g, ++u) {                                    \
            const int64_t off = g * (DD);                                                      \
            const T *xr = x + u * (DD), *dyr = dy + u * (DD);                                  \
            const T *wr = w ? w + off : 0;                                                     \
            T *dxr = dx ? dx + u * (DD) : 0;                                                   \
            T *pwr = need_p ? pw + off : 0, *pbr = need_p ? pb + off : 0;                      \
            const T mu = mean[u], r = rstd[u];                                                 \
            if (need_p) {                                                                      \
                if (w && ada) BWD_CALL(SUFFIX, DD, SMALL, 1, 1, 1);                            \
                else if (w) BWD_CALL(SUFFIX, DD, SMALL, 1, 0, 1);                              \
                else if (ada) BWD_CALL(SUFFIX, DD, SMALL, 0, 1, 1);                            \
                else BWD_CALL(SUFFIX, DD, SMALL, 0, 0, 1);                                     \
            } else {                                                                           \
                if (w && ada) BWD_CALL(SUFFIX, DD, SMALL, 1, 1, 0);                            \
                else if (w) BWD_CALL(SUFFIX, DD, SMALL, 1, 0, 0);                              \
                else if (ada) BWD_CALL(SUFFIX, DD, SMALL, 0, 1, 0);                            \
                else BWD_CALL(SUFFIX, DD, SMALL, 0, 0, 0);                                     \
            }                                                                                  \
        }                                                                                      \
    }

#define DEFINE_KERNELS(T, SUFFIX)                                                              \
/* One group (a whole row when G = 1) of the forward pass: statistics, then y. Inlined with a  \
   literal D for the small group sizes of LN-G (see lnk_forward), so that its loops unroll    \
   into a few vector instructions instead of a generic loop with prologue and epilogue. */    \
static inline __attribute__((always_inline)) void fwd_unit_##SUFFIX(                           \
    const T *restrict xr, const T *restrict wr, const T *restrict br, T *restrict yr,         \
    T *restrict mean_out, T *restrict rstd_out, const int64_t D, double eps, int center,      \
    int ada, T Ct, T kt)                                                                       \
{                                                                                              \
    T mu = 0;                                                                                  \
    if (center) {                                                                              \
        T s = 0;                                                                               \
        _Pragma("omp simd reduction(+:s)")                                                     \
        for (int64_t i = 0; i < D; ++i) s += xr[i];                                            \
        mu = s / (T)D;                                                                         \
    }                                                                                          \
    T ss = 0, sd = 0;                                                                          \
    _Pragma("omp simd reduction(+:ss,sd)")                                                     \
    for (int64_t i = 0; i < D; ++i) { T d = xr[i] - mu; sd += d; ss += d * d; }                \
    /* corrected two-pass (Chan, Golub & LeVeque): sd / D is the rounding error of the       \
       float mean, which 1/sigma would amplify; removing it keeps native accuracy. */          \
    const T cd = center ? sd / (T)D : (T)0;                                                    \
    const T muT = mu + cd;                                                                     \
    const T var = ss / (T)D - cd * cd;                                                         \
    const T r = (T)1 / SQRT_##T((var > 0 ? var : (T)0) + (T)eps);                             \
    *mean_out = muT;                                                                           \
    *rstd_out = r;                                                                             \
    if (!ada && wr && br) {                                                                    \
        _Pragma("omp simd")                                                                    \
        for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - muT) * r * wr[i] + br[i];             \
    } else if (!ada && wr) {                                                                   \
        _Pragma("omp simd")                                                                    \
        for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - muT) * r * wr[i];                     \
    } else if (!ada) {                                                                         \
        _Pragma("omp simd")                                                                    \
        for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - muT) * r + (br ? br[i] : (T)0);       \
    } else {                                                                                   \
        _Pragma("omp simd")                                                                    \
        for (int64_t i = 0; i < D; ++i) {                                                      \
            T h = (xr[i] - muT) * r;                                                           \
            T z = Ct * ((T)1 - kt * h) * h;                                                    \
            yr[i] = (wr ? z * wr[i] : z) + (br ? br[i] : (T)0);                                \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
/* Rows [r0, r1) of LN-G with small groups, in phases over all groups of a row (means; then  \
   deviations; then 1/sigma as one vector op; then y): each phase's groups are independent,  \
   so the CPU overlaps them, where group after group would wait on each group's chain of     \
   reductions, division and square root (3x slower at D = 16). */                            \
static inline __attribute__((always_inline)) void fwd_rows_##SUFFIX(                           \
    const T *restrict x, const T *restrict w, const T *restrict b, T *restrict y,             \
    T *restrict mean_out, T *restrict rstd_out, int64_t r0, int64_t r1, int64_t G,            \
    const int64_t D, double eps, int center, int ada, T Ct, T kt)                              \
{                                                                                              \
    const int64_t Dv = D - D % LANES;  /* the part in whole vectors */                         \
    typedef T V __attribute__((vector_size(LANES * sizeof(T))));                               \
    const int64_t N = G * D;                                                                   \
    const T epsT = (T)eps;                                                                     \
    for (int64_t row = r0; row < r1; ++row) {                                                  \
        const T *restrict xr = x + row * N;                                                    \
        T *restrict yr = y + row * N;                                                          \
        T *restrict mo = mean_out + row * G, *restrict ro = rstd_out + row * G;                \
        for (int64_t g = 0; g < G; ++g) {                                                      \
            T s = 0;                                                                           \
            if (center) {                                                                      \
                V a = {0}, xv;                                                                 \
                for (int64_t i = 0; i < Dv; i += LANES) {                                      \
                    memcpy(&xv, xr + g * D + i, sizeof(V));                                    \
                    a += xv;                                                                   \
                }                                                                              \
                s = VEC_SUM8(a);                                                               \
                for (int64_t i = Dv; i < D; ++i) s += xr[g * D + i];                           \
            }                                                                                  \
            mo[g] = s / (T)D;                                                                  \
        }                                                                                      \
        for (int64_t g = 0; g < G; ++g) {                                                      \
            const T mu = mo[g];                                                                \
            V as = {0}, ad = {0}, xv;                                                          \
            for (int64_t i = 0; i < Dv; i += LANES) {                                          \
                memcpy(&xv, xr + g * D + i, sizeof(V));                                        \
                const V d = xv - mu;                                                           \
                ad += d;                                                                       \
                as += d * d;                                                                   \
            }                                                                                  \
            T ss = VEC_SUM8(as), sd = VEC_SUM8(ad);                                            \
            for (int64_t i = Dv; i < D; ++i) {                                                 \
                const T d = xr[g * D + i] - mu;                                                \
                sd += d;                                                                       \
                ss += d * d;                                                                   \
            }                                                                                  \
            const T cd = center ? sd / (T)D : (T)0;   /* corrected two-pass, as above */       \
            mo[g] = mu + cd;                                                                   \
            ro[g] = ss / (T)D - cd * cd;              /* the variance, for now */              \
        }                                                                                      \
        _Pragma("omp simd")                                                                    \
        for (int64_t g = 0; g < G; ++g)                                                        \
            ro[g] = (T)1 / SQRT_##T((ro[g] > 0 ? ro[g] : (T)0) + epsT);                        \
        for (int64_t g = 0; g < G; ++g) {                                                      \
            const T muT = mo[g], r = ro[g];                                                    \
            const T *restrict xg = xr + g * D;                                                 \
            T *restrict yg = yr + g * D;                                                       \
            const T *restrict wg = w ? w + g * D : 0, *restrict bg = b ? b + g * D : 0;       \
            if (!ada && wg && bg) {                                                            \
                _Pragma("omp simd")                                                            \
                for (int64_t i = 0; i < D; ++i) yg[i] = (xg[i] - muT) * r * wg[i] + bg[i];     \
            } else if (!ada && wg) {                                                           \
                _Pragma("omp simd")                                                            \
                for (int64_t i = 0; i < D; ++i) yg[i] = (xg[i] - muT) * r * wg[i];             \
            } else if (!ada) {                                                                 \
                _Pragma("omp simd")                                                            \
                for (int64_t i = 0; i < D; ++i) yg[i] = (xg[i] - muT) * r + (bg ? bg[i] : (T)0);\
            } else {                                                                           \
                _Pragma("omp simd")                                                            \
                for (int64_t i = 0; i < D; ++i) {                                              \
                    T h = (xg[i] - muT) * r;                                                   \
                    T z = Ct * ((T)1 - kt * h) * h;                                            \
                    yg[i] = (wg ? z * wg[i] : z) + (bg ? bg[i] : (T)0);                        \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
void lnk_forward_##SUFFIX(const T *restrict x, const T *restrict w, const T *restrict b,       \
                          T *restrict y, T *restrict mean_out, T *restrict rstd_out,           \
                          int64_t M, int64_t N, int64_t G, double eps, int center, int ada,    \
                          double C, double k, int nthreads)                                    \
{                                                                                              \
    const int64_t D = N / G;                                                                   \
    const int nt = (M * N >= PAR_MIN_ELEMS) ? nthreads : 1;                                    \
    const T Ct = (T)C, kt = (T)k;                                                              \
    if (G == 1 || D > SMALL_D_MAX || M < nt) {                                                 \
        /* one unit per row or per (large) group: parallel over all of them (also when there  \
           are fewer rows than threads) */                                                    \
        _Pragma("omp parallel for schedule(static) num_threads(nt)")                           \
        for (int64_t u = 0; u < M * G; ++u) {                                                  \
            const int64_t off = G == 1 ? 0 : (u % G) * D;                                      \
            fwd_unit_##SUFFIX(x + u * D, w ? w + off : 0, b ? b + off : 0, y + u * D,         \
                              mean_out + u, rstd_out + u, D, eps, center, ada, Ct, kt);        \
        }                                                                                      \
        return;                                                                                \
    }                                                                                          \
    /* small groups: rows in parallel, each row's groups in order, D a literal when common */ \
    _Pragma("omp parallel num_threads(nt)")                                                    \
    {                                                                                          \
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();                     \
        const int64_t chunk = (M + nth - 1) / nth;                                             \
        const int64_t r0 = tid * chunk < M ? tid * chunk : M;                                  \
        const int64_t r1 = r0 + chunk < M ? r0 + chunk : M;                                    \
        switch (D) {                                                                           \
        SMALL_D_CASES(fwd_rows_##SUFFIX(x, w, b, y, mean_out, rstd_out, r0, r1, G, DLIT, eps,  \
                                        center, ada, Ct, kt))                                  \
        default: fwd_rows_##SUFFIX(x, w, b, y, mean_out, rstd_out, r0, r1, G, D, eps, center,  \
                                   ada, Ct, kt);                                               \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
/* One row (or group) of the backward pass. Called with literal flags so that the compiler   \
   emits a specialised, branch-free vector loop for each combination. small = 1 (LN-G, at   \
   most SMALL_D_MAX features per group): sums in explicit vectors, see SMALL_D_MAX. */       \
static inline __attribute__((always_inline)) void bwd_row_##SUFFIX(                            \
    const T *restrict xr, const T *restrict dyr, const T *restrict wr, T mu, T r,              \
    T *restrict dxr, T *restrict pwr, T *restrict pbr, int64_t D, const int has_w,             \
    const int ada, const int need_p, T Ct, T kt, int use_c1, int use_c2, const int small)      \
{                                                                                              \
    T s1 = 0, s2 = 0;                                                                          \
    if (small) { /* explicit vectors, then a scalar tail (see SMALL_D_MAX) */                 \
        typedef T V __attribute__((vector_size(LANES * sizeof(T))));                           \
        const int64_t Dv = D - D % LANES;                                                      \
        V a1 = {0}, a2 = {0};                                                                  \
        for (int64_t i = 0; i < Dv; i += LANES) {                                              \
            V xv, dv, wv, h, a, gy;                                                            \
            memcpy(&xv, xr + i, sizeof(V));                                                    \
            memcpy(&dv, dyr + i, sizeof(V));                                                   \
            h = (xv - mu) * r;                                                                 \
            a = ada ? Ct * ((T)1 - kt * h) : h * (T)0 + (T)1;                                  \
            if (need_p) {                                                                      \
                V pw, pb;                                                                      \
                memcpy(&pw, pwr + i, sizeof(V));                                               \
                memcpy(&pb, pbr + i, sizeof(V));                                               \
                pw += dv * a * h;                                                              \
                pb += dv;                                                                      \
                memcpy(pwr + i, &pw, sizeof(V));                                               \
                memcpy(pbr + i, &pb, sizeof(V));                                               \
            }                                                                                  \
            if (has_w) { memcpy(&wv, wr + i, sizeof(V)); gy = dv * wv * a; }                   \
            else gy = dv * a;                                                                  \
            a1 += gy;                                                                          \
            a2 += gy * h;                                                                      \
        }                                                                                      \
        s1 = VEC_SUM8(a1);                                                                     \
        s2 = VEC_SUM8(a2);                                                                     \
        for (int64_t i = Dv; i < D; ++i) {                                                     \
            const T h = (xr[i] - mu) * r;                                                      \
            const T a = ada ? Ct * ((T)1 - kt * h) : (T)1;                                     \
            if (need_p) { pwr[i] += dyr[i] * a * h; pbr[i] += dyr[i]; }                        \
            const T gy = (has_w ? dyr[i] * wr[i] : dyr[i]) * a;                                \
            s1 += gy;                                                                          \
            s2 += gy * h;                                                                      \
        }                                                                                      \
    } else {                                                                                   \
        _Pragma("omp simd reduction(+:s1,s2)")                                                 \
        for (int64_t i = 0; i < D; ++i) {                                                      \
            T h = (xr[i] - mu) * r;                                                            \
            T a = ada ? Ct * ((T)1 - kt * h) : (T)1;                                           \
            if (need_p) { pwr[i] += dyr[i] * a * h; pbr[i] += dyr[i]; }                        \
            T gy = (has_w ? dyr[i] * wr[i] : dyr[i]) * a;                                      \
            s1 += gy;                                                                          \
            s2 += gy * h;                                                                      \
        }                                                                                      \
    }                                                                                          \
    if (!dxr) return;                                                                          \
    const T c1 = use_c1 ? s1 / (T)D : (T)0;                                                    \
    const T c2 = use_c2 ? s2 / (T)D : (T)0;                                                    \
    _Pragma("omp simd")                                                                        \
    for (int64_t i = 0; i < D; ++i) {                                                          \
        T h = (xr[i] - mu) * r;                                                                \
        T a = ada ? Ct * ((T)1 - kt * h) : (T)1;                                               \
        T gy = (has_w ? dyr[i] * wr[i] : dyr[i]) * a;                                          \
        dxr[i] = r * (gy - c1 - h * c2);                                                       \
    }                                                                                          \
}                                                                                              \
                                                                                               \
/* partial: workspace of nthreads * 2 * N elements for per-thread dw/db sums. */               \
void lnk_backward_##SUFFIX(const T *restrict dy, const T *restrict x, const T *restrict w,     \
                           const T *restrict mean, const T *restrict rstd, T *restrict dx,     \
                           T *restrict dw, T *restrict db, T *restrict partial,                \
                           int64_t M, int64_t N, int64_t G, int center, int detach_mean,       \
                           int detach_std, int ada, double C, double k, int nthreads)          \
{                                                                                              \
    const int64_t D = N / G;                                                                   \
    const int nt = (M * N >= PAR_MIN_ELEMS) ? nthreads : 1;                                    \
    const int need_p = (dw != 0) || (db != 0);                                                 \
    const T Ct = (T)C, kt = (T)k;                                                              \
    int used_threads = 1;                                                                      \
    const int use_c1 = center && !detach_mean;                                                 \
    const int use_c2 = !detach_std;                                                            \
    _Pragma("omp parallel num_threads(nt)")                                                    \
    {                                                                                          \
        const int tid = omp_get_thread_num();                                                  \
        const int nth = omp_get_num_threads();                                                 \
        if (tid == 0) used_threads = nth;                                                      \
        T *pw = partial ? partial + (int64_t)tid * 2 * N : 0;                                  \
        T *pb = pw ? pw + N : 0;                                                               \
        if (need_p) memset(pw, 0, sizeof(T) * 2 * N);                                          \
        const int64_t chunk = (M + nth - 1) / nth;                                             \
        const int64_t r0 = tid * chunk;                                                        \
        const int64_t r1 = (r0 + chunk < M) ? r0 + chunk : M;                                  \
        if (G > 1 && D <= SMALL_D_MAX) {                                                       \
            switch (D) {                                                                       \
            SMALL_D_CASES(BWD_ROWS(T, SUFFIX, DLIT, 1))                                        \
            default: BWD_ROWS(T, SUFFIX, D, 1);                                                \
            }                                                                                  \
        } else {                                                                               \
            BWD_ROWS(T, SUFFIX, D, 0);                                                            \
        }                                                                                      \
    }                                                                                          \
    if (need_p) {                                                                              \
        const int ntu = used_threads;                                                          \
        _Pragma("omp parallel for schedule(static) num_threads(nt) if(N >= 4096)")              \
        for (int64_t i = 0; i < N; ++i) {                                                      \
            T sw = 0, sb = 0;                                                                  \
            for (int t = 0; t < ntu; ++t) {                                                    \
                sw += partial[(int64_t)t * 2 * N + i];                                         \
                sb += partial[(int64_t)t * 2 * N + N + i];                                     \
            }                                                                                  \
            if (dw) dw[i] = sw;                                                                \
            if (db) db[i] = sb;                                                                \
        }                                                                                      \
    }                                                                                          \
}

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)

int lnk_abi_version(void) { return 1; }
