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
#include <torch/csrc/autograd/functions/utils.h>
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

// The autograd node, written like PyTorch's generated ones (a Node with SavedVariables; a
// torch::autograd::Function costs ~5 us more per call, 10% of a 64x256 forward+backward).
// Its backward goes back through the dispatcher, so tracing sees lnlab::norm_bwd.
struct NormBackward : public torch::autograd::Node {
  torch::autograd::SavedVariable x_, w_, stats_;
  int64_t groups = 1;
  double eps = 0, C = 1, k = 0;
  bool center = true, dm = false, ds = false, ada = false, has_w = false, has_b = false;

  std::string name() const override { return "LnlabNormBackward"; }

  void release_variables() override {
    x_.reset_data();
    w_.reset_data();
    stats_.reset_data();
  }

  variable_list apply(variable_list &&grads) override {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lnlab::norm_bwd", "")
                         .typed<BwdSig>();
    const Tensor x = x_.unpack(), w = w_.unpack(), stats = stats_.unpack();
    const bool need_x = task_should_compute_output(0);
    const bool need_w = has_w && task_should_compute_output(1);
    const bool need_b = has_b && task_should_compute_output(2);
    variable_list out(3);
    if (!(need_x || need_w || need_b)) return out;
    Tensor dy = grads[0].defined() ? grads[0] : at::zeros_like(x);
    // Without create_graph, skip the autograd layer of norm_bwd (its Python autograd kernel
    // exists for double backward only).
    std::optional<at::AutoDispatchBelowADInplaceOrView> below;
    if (!at::GradMode::is_enabled()) below.emplace();
    auto [dx, dw, db] = op.call(dy, x, w.defined() ? OptT(w) : OptT(), stats, groups, eps,
                                center, dm, ds, ada, C, k, need_w, need_b);
    if (need_x) out[0] = dx;
    if (need_w) out[1] = dw;
    if (need_b) out[2] = db;
    return out;
  }
};

std::tuple<Tensor, Tensor> norm_fwd_autograd(const Tensor &x, const OptT &w, const OptT &b,
                                             int64_t groups, double eps, bool center, bool dm,
                                             bool ds, bool ada, double C, double k) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("lnlab::norm_fwd", "")
                       .typed<FwdSig>();
  const Tensor wt = w.has_value() ? *w : Tensor(), bt = b.has_value() ? *b : Tensor();
  const bool grad = torch::autograd::compute_requires_grad(x, wt, bt);
  std::tuple<Tensor, Tensor> out;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    out = op.call(x, w, b, groups, eps, center, dm, ds, ada, C, k);
  }
  if (!grad) return out;
  auto node = c10::make_intrusive<NormBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(x, wt, bt));
  node->x_ = torch::autograd::SavedVariable(x, false);
  node->w_ = torch::autograd::SavedVariable(wt, false);
  node->stats_ = torch::autograd::SavedVariable(std::get<1>(out), false);
  node->groups = groups;
  node->eps = eps;
  node->C = C;
  node->k = k;
  node->center = center;
  node->dm = dm;
  node->ds = ds;
  node->ada = ada;
  node->has_w = wt.defined();
  node->has_b = bt.defined();
  torch::autograd::set_history(std::get<0>(out), node);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lnlab, CPU, m) {
  m.impl("norm_fwd", &norm_fwd_cpu);
  m.impl("norm_bwd", &norm_bwd_cpu);
}

TORCH_LIBRARY_IMPL(lnlab, AutogradCPU, m) { m.impl("norm_fwd", &norm_fwd_autograd); }
