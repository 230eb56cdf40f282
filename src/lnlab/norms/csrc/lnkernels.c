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
/* 1/sigma in the input precision, as ATen's CPU LayerNorm (float: sqrtss, no double detour) */
#define SQRT_float sqrtf
#define SQRT_double sqrt

#define DEFINE_KERNELS(T, SUFFIX)                                                              \
void lnk_forward_##SUFFIX(const T *restrict x, const T *restrict w, const T *restrict b,       \
                          T *restrict y, T *restrict mean_out, T *restrict rstd_out,           \
                          int64_t M, int64_t N, int64_t G, double eps, int center, int ada,    \
                          double C, double k, int nthreads)                                    \
{                                                                                              \
    const int64_t D = N / G;                                                                   \
    const int64_t units = M * G;                                                               \
    const int nt = (M * N >= PAR_MIN_ELEMS) ? nthreads : 1;                                    \
    _Pragma("omp parallel for schedule(static) num_threads(nt)")                               \
    for (int64_t u = 0; u < units; ++u) {                                                      \
        const T *xr = x + u * D;                                                               \
        T *yr = y + u * D;                                                                     \
        const int64_t off = (u % G) * D;                                                       \
        T mu = 0;                                                                              \
        if (center) {                                                                          \
            T s = 0;                                                                           \
            _Pragma("omp simd reduction(+:s)")                                                 \
            for (int64_t i = 0; i < D; ++i) s += xr[i];                                        \
            mu = s / (T)D;                                                                     \
        }                                                                                      \
        T ss = 0, sd = 0;                                                                      \
        _Pragma("omp simd reduction(+:ss,sd)")                                                 \
        for (int64_t i = 0; i < D; ++i) { T d = xr[i] - mu; sd += d; ss += d * d; }            \
        /* corrected two-pass (Chan, Golub & LeVeque): sd / D is the rounding error of the   \
           float mean, which 1/sigma would amplify; removing it keeps native accuracy. */      \
        const T cd = center ? sd / (T)D : (T)0;                                                \
        const T muT = mu + cd;                                                                 \
        const T var = ss / (T)D - cd * cd;                                                     \
        const T r = (T)1 / SQRT_##T((var > 0 ? var : (T)0) + (T)eps);                         \
        mean_out[u] = muT;                                                                     \
        rstd_out[u] = r;                                                                       \
        const T *wr = w ? w + off : 0;                                                         \
        const T *br = b ? b + off : 0;                                                         \
        const T Ct = (T)C, kt = (T)k;                                                          \
        if (!ada && wr && br) {                                                                \
            _Pragma("omp simd")                                                                \
            for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - muT) * r * wr[i] + br[i];         \
        } else if (!ada && wr) {                                                               \
            _Pragma("omp simd")                                                                \
            for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - muT) * r * wr[i];                 \
        } else if (!ada) {                                                                     \
            _Pragma("omp simd")                                                                \
            for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - muT) * r + (br ? br[i] : (T)0);   \
        } else {                                                                               \
            _Pragma("omp simd")                                                                \
            for (int64_t i = 0; i < D; ++i) {                                                  \
                T h = (xr[i] - muT) * r;                                                       \
                T z = Ct * ((T)1 - kt * h) * h;                                                \
                yr[i] = (wr ? z * wr[i] : z) + (br ? br[i] : (T)0);                            \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
/* One row (or group) of the backward pass. Called with literal flags so that the compiler   \
   emits a specialised, branch-free vector loop for each combination. */                       \
static inline __attribute__((always_inline)) void bwd_row_##SUFFIX(                            \
    const T *restrict xr, const T *restrict dyr, const T *restrict wr, T mu, T r,              \
    T *restrict dxr, T *restrict pwr, T *restrict pbr, int64_t D, const int has_w,             \
    const int ada, const int need_p, T Ct, T kt, int use_c1, int use_c2)                       \
{                                                                                              \
    T s1 = 0, s2 = 0;                                                                          \
    _Pragma("omp simd reduction(+:s1,s2)")                                                     \
    for (int64_t i = 0; i < D; ++i) {                                                          \
        T h = (xr[i] - mu) * r;                                                                \
        T a = ada ? Ct * ((T)1 - kt * h) : (T)1;                                               \
        if (need_p) { pwr[i] += dyr[i] * a * h; pbr[i] += dyr[i]; }                            \
        T gy = (has_w ? dyr[i] * wr[i] : dyr[i]) * a;                                          \
        s1 += gy;                                                                              \
        s2 += gy * h;                                                                          \
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
        for (int64_t u = r0 * G; u < r1 * G; ++u) {                                            \
            const int64_t off = (u % G) * D;                                                   \
            const T *xr = x + u * D, *dyr = dy + u * D;                                        \
            const T *wr = w ? w + off : 0;                                                     \
            T *dxr = dx ? dx + u * D : 0;                                                      \
            T *pwr = need_p ? pw + off : 0, *pbr = need_p ? pb + off : 0;                      \
            const T mu = mean[u], r = rstd[u];                                                 \
            if (need_p) {                                                                      \
                if (w && ada) bwd_row_##SUFFIX(xr, dyr, wr, mu, r, dxr, pwr, pbr, D, 1, 1, 1,  \
                                               Ct, kt, use_c1, use_c2);                        \
                else if (w) bwd_row_##SUFFIX(xr, dyr, wr, mu, r, dxr, pwr, pbr, D, 1, 0, 1,    \
                                             Ct, kt, use_c1, use_c2);                          \
                else if (ada) bwd_row_##SUFFIX(xr, dyr, wr, mu, r, dxr, pwr, pbr, D, 0, 1, 1,  \
                                               Ct, kt, use_c1, use_c2);                        \
                else bwd_row_##SUFFIX(xr, dyr, wr, mu, r, dxr, pwr, pbr, D, 0, 0, 1,           \
                                      Ct, kt, use_c1, use_c2);                                 \
            } else {                                                                           \
                if (w && ada) bwd_row_##SUFFIX(xr, dyr, wr, mu, r, dxr, pwr, pbr, D, 1, 1, 0,  \
                                               Ct, kt, use_c1, use_c2);                        \
                else if (w) bwd_row_##SUFFIX(xr, dyr, wr, mu, r, dxr, pwr, pbr, D, 1, 0, 0,    \
                                             Ct, kt, use_c1, use_c2);                          \
                else if (ada) bwd_row_##SUFFIX(xr, dyr, wr, mu, r, dxr, pwr, pbr, D, 0, 1, 0,  \
                                               Ct, kt, use_c1, use_c2);                        \
                else bwd_row_##SUFFIX(xr, dyr, wr, mu, r, dxr, pwr, pbr, D, 0, 0, 0,           \
                                      Ct, kt, use_c1, use_c2);                                 \
            }                                                                                  \
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
