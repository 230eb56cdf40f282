// CPU and autograd kernels of the ops lnlab::norm_fwd / lnlab::norm_bwd (schemas, fake kernels,
// vmap rules and the device-generic fallback are defined in Python, lnlab/norms/ops.py).
//
// Why C++ around the C kernels of lnkernels.c: at the small shapes of lnlab's experiments
// (64x256) a forward+backward costs about 40 us in native F.layer_norm, nearly all of it call
// overhead. A Python kernel (ctypes) plus a Python autograd node adds 50-150 us; a C++ kernel
// with a C++ autograd node costs what native ops cost.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

extern "C" {
void lnk_forward_f32(const float *x, const float *w, const float *b, float *y, float *mean,
                     float *rstd, int64_t M, int64_t N, int64_t G, double eps, int center,
                     int ada, double C, double k, int nthreads);
void lnk_forward_f64(const double *x, const double *w, const double *b, double *y,
                     double *mean, double *rstd, int64_t M, int64_t N, int64_t G, double eps,
                     int center, int ada, double C, double k, int nthreads);
void lnk_backward_f32(const float *dy, const float *x, const float *w, const float *mean,
                      const float *rstd, float *dx, float *dw, float *db, float *partial,
                      int64_t M, int64_t N, int64_t G, int center, int detach_mean,
                      int detach_std, int ada, double C, double k, int nthreads);
void lnk_backward_f64(const double *dy, const double *x, const double *w, const double *mean,
                      const double *rstd, double *dx, double *dw, double *db, double *partial,
                      int64_t M, int64_t N, int64_t G, int center, int detach_mean,
                      int detach_std, int ada, double C, double k, int nthreads);
}

namespace {

using at::Tensor;
using OptT = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename T> struct Kern;
template <> struct Kern<float> {
  static constexpr auto fwd = lnk_forward_f32;
  static constexpr auto bwd = lnk_backward_f32;
};
template <> struct Kern<double> {
  static constexpr auto fwd = lnk_forward_f64;
  static constexpr auto bwd = lnk_backward_f64;
};

Tensor opt_contig(const OptT &t, const Tensor &x, const char *name) {
  if (!t.has_value() || !t->defined()) return Tensor();
  TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->numel() == x.size(1),
              "lnlab::norm: ", name, " must have ", x.size(1), " elements of the input dtype");
  return t->contiguous();
}

template <typename T> T *ptr(const Tensor &t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

std::tuple<Tensor, Tensor> norm_fwd_cpu(const Tensor &x_, const OptT &w_, const OptT &b_,
                                        int64_t groups, double eps, bool center, bool dm,
                                        bool ds, bool ada, double C, double k) {
  TORCH_CHECK(x_.dim() == 2, "lnlab::norm_fwd expects a 2-D (rows, features) input");
  TORCH_CHECK(x_.scalar_type() == at::kFloat || x_.scalar_type() == at::kDouble,
              "lnlab::norm_fwd on CPU takes float32/float64, got ", x_.scalar_type());
  TORCH_CHECK(groups >= 1 && x_.size(1) % groups == 0, "lnlab::norm_fwd: bad groups");
  Tensor x = x_.contiguous();
  Tensor w = opt_contig(w_, x, "weight"), b = opt_contig(b_, x, "bias");
  const int64_t m = x.size(0), n = x.size(1);
  Tensor y = at::empty_like(x);
  Tensor stats = at::empty({2, m * groups}, x.options());
  if (m) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lnlab_norm_fwd", [&] {
      scalar_t *s = stats.data_ptr<scalar_t>();
      Kern<scalar_t>::fwd(x.data_ptr<scalar_t>(), ptr<scalar_t>(w), ptr<scalar_t>(b),
                          y.data_ptr<scalar_t>(), s, s + m * groups, m, n, groups, eps,
                          center, ada, C, k, at::get_num_threads());
    });
  }
  return {y, stats};
}

std::tuple<Tensor, Tensor, Tensor> norm_bwd_cpu(const Tensor &dy_, const Tensor &x_,
                                                const OptT &w_, const Tensor &stats_,
                                                int64_t groups, double eps, bool center,
                                                bool dm, bool ds,
                                                bool ada, double C, double k, bool need_w,
                                                bool need_b) {
  TORCH_CHECK(x_.dim() == 2 && dy_.sizes() == x_.sizes(), "lnlab::norm_bwd: bad shapes");
  TORCH_CHECK(x_.scalar_type() == at::kFloat || x_.scalar_type() == at::kDouble,
              "lnlab::norm_bwd on CPU takes float32/float64, got ", x_.scalar_type());
  TORCH_CHECK(dy_.scalar_type() == x_.scalar_type() && stats_.scalar_type() == x_.scalar_type(),
              "lnlab::norm_bwd: dy, x and stats must share a dtype");
  Tensor x = x_.contiguous(), dy = dy_.contiguous(), stats = stats_.contiguous();
  Tensor w = opt_contig(w_, x, "weight");
  const int64_t m = x.size(0), n = x.size(1);
  Tensor dx = at::empty_like(x);
  Tensor dw = at::empty({need_w ? n : 0}, x.options());
  Tensor db = at::empty({need_b ? n : 0}, x.options());
  if (!m) {
    dw.zero_();
    db.zero_();
    return {dx, dw, db};
  }
  const int nt = at::get_num_threads();
  Tensor part = (need_w || need_b) ? at::empty({nt * 2 * n}, x.options()) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lnlab_norm_bwd", [&] {
    scalar_t *s = stats.data_ptr<scalar_t>();
    Kern<scalar_t>::bwd(dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), ptr<scalar_t>(w), s,
                        s + m * groups, dx.data_ptr<scalar_t>(),
                        need_w ? dw.data_ptr<scalar_t>() : nullptr,
                        need_b ? db.data_ptr<scalar_t>() : nullptr, ptr<scalar_t>(part), m, n,
                        groups, center, dm, ds, ada, C, k, nt);
  });
  return {dx, dw, db};
}

using FwdSig = std::tuple<Tensor, Tensor>(const Tensor &, const OptT &, const OptT &, int64_t,
                                          double, bool, bool, bool, bool, double, double);
using BwdSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor &, const Tensor &, const OptT &,
                                                  const Tensor &, int64_t, double, bool, bool,
                                                  bool,
                                                  bool, double, double, bool, bool);

// The autograd node: forward and backward both go back through the dispatcher, so tracing
// (torch.compile / export / vmap) sees the ops rather than this code.
class NormFn : public torch::autograd::Function<NormFn> {
 public:
  static variable_list forward(AutogradContext *ctx, const Tensor &x, const OptT &w,
                               const OptT &b, int64_t groups, double eps, bool center, bool dm,
                               bool ds, bool ada, double C, double k) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lnlab::norm_fwd", "")
                         .typed<FwdSig>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, stats] = op.call(x, w, b, groups, eps, center, dm, ds, ada, C, k);
    const bool has_w = w.has_value() && w->defined();
    const bool has_b = b.has_value() && b->defined();
    ctx->save_for_backward({x, has_w ? *w : Tensor(), stats});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["C"] = C;
    ctx->saved_data["k"] = k;
    ctx->saved_data["flags"] = static_cast<int64_t>(center | dm << 1 | ds << 2 | ada << 3 |
                                                    has_w << 4 | has_b << 5);
    ctx->mark_non_differentiable({stats});
    return {y, stats};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lnlab::norm_bwd", "")
                         .typed<BwdSig>();
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &w = saved[1], &stats = saved[2];
    const int64_t f = ctx->saved_data["flags"].toInt();
    const bool need_w = (f & 16) && ctx->needs_input_grad(1);
    const bool need_b = (f & 32) && ctx->needs_input_grad(2);
    Tensor dy = grads[0].defined() ? grads[0] : at::zeros_like(x);
    // Without create_graph, skip the autograd layer of norm_bwd (its Python autograd kernel
    // exists for double backward only).
    std::optional<at::AutoDispatchBelowADInplaceOrView> below;
    if (!at::GradMode::is_enabled()) below.emplace();
    auto [dx, dw, db] = op.call(
        dy, x, w.defined() ? OptT(w) : OptT(), stats, ctx->saved_data["groups"].toInt(),
        ctx->saved_data["eps"].toDouble(), f & 1, f & 2, f & 4, f & 8,
        ctx->saved_data["C"].toDouble(), ctx->saved_data["k"].toDouble(), need_w, need_b);
    return {ctx->needs_input_grad(0) ? dx : Tensor(), need_w ? dw : Tensor(),
            need_b ? db : Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
            Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor> norm_fwd_autograd(const Tensor &x, const OptT &w, const OptT &b,
                                             int64_t groups, double eps, bool center, bool dm,
                                             bool ds, bool ada, double C, double k) {
  const bool grad = at::GradMode::is_enabled() &&
                    (x.requires_grad() || (w.has_value() && w->requires_grad()) ||
                     (b.has_value() && b->requires_grad()));
  if (!grad) {  // no node to record: straight to the kernel
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lnlab::norm_fwd", "")
                         .typed<FwdSig>();
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(x, w, b, groups, eps, center, dm, ds, ada, C, k);
  }
  auto out = NormFn::apply(x, w, b, groups, eps, center, dm, ds, ada, C, k);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(lnlab, CPU, m) {
  m.impl("norm_fwd", &norm_fwd_cpu);
  m.impl("norm_bwd", &norm_bwd_cpu);
}

TORCH_LIBRARY_IMPL(lnlab, AutogradCPU, m) { m.impl("norm_fwd", &norm_fwd_autograd); }
