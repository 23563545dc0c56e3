// Registers deepmd_kernels::neighbor_sums (neighbor_sums.h): schema, CPU kernel, and an Autograd kernel
// whose torch::autograd::Function calls the hand-written backward. Differentiable once, as
// repflow_angle (ops.cc).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "deepmd/kernels/neighbor_sums.h"

namespace deepmd::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 8;  // centres per task when intra-op threads are enabled
constexpr const char* kOp = "deepmd_kernels::neighbor_sums";

struct CheckedSums {
  at::Tensor a, x, nbr, w, h2;
  bool has_a = true;
  at::Tensor wa, wat, ba;  // the conv rows' projection (undefined: none)
};

// a: [nb, nnei, F], or [nb, nnei, c] with wa [c, F] and ba [F] (wa 1-d empty: no projection), or a 1-d
// empty tensor for no conv.
CheckedSums Check(const at::Tensor& a, const at::Tensor& wa, const at::Tensor& ba, const at::Tensor& x,
                  const at::Tensor& nbr, const at::Tensor& w, const at::Tensor& h2) {
  TORCH_CHECK(x.dim() == 2, kOp, ": x must be [rows, F], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, kOp, ": float32 or float64 only, got ",
              x.scalar_type());
  TORCH_CHECK(nbr.dim() == 2 && nbr.scalar_type() == at::kLong && nbr.device().is_cpu(), kOp,
              ": nbr must be a CPU int64 tensor [nb, nnei], got ", nbr.scalar_type(), " ", nbr.sizes());
  const int64_t nb = nbr.size(0), N = nbr.size(1), rows = x.size(0), f = x.size(1);
  const bool has_a = !(a.dim() == 1 && a.numel() == 0);
  const bool project = !(wa.dim() == 1 && wa.numel() == 0);
  TORCH_CHECK(!project || wa.dim() == 2, kOp, ": wa must be [c, F] or empty, got ", wa.sizes());
  const int64_t c = project ? wa.size(0) : f;
  auto expect = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape) {
    TORCH_CHECK(t.sizes() == shape, kOp, ": ", name, " must have shape ", shape, ", got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), kOp, ": ", name, " is ", t.scalar_type(), ", x is ",
                x.scalar_type());
    TORCH_CHECK(t.device().is_cpu(), kOp, ": CPU tensors only, ", name, " is on ", t.device());
    return t.contiguous();
  };
  CheckedSums checked{has_a ? expect(a, "a", {nb, N, c}) : a,
                      expect(x, "x", {rows, f}),
                      nbr.contiguous(),
                      expect(w, "w", {nb, N}),
                      expect(h2, "h2", {nb, N, 3}),
                      has_a};
  if (project) {
    checked.wa = expect(wa, "wa", {c, f});
    checked.wat = checked.wa.t().contiguous();
    checked.ba = expect(ba, "ba", {f});
  }
  const int64_t* idx = checked.nbr.data_ptr<int64_t>();
  for (int64_t i = 0; i < nb * N; ++i) {
    TORCH_CHECK(idx[i] >= -1 && idx[i] < rows, kOp, ": nbr holds row ", idx[i], " but x has ", rows,
                " rows (-1 marks a padded slot)");
  }
  return checked;
}

template <typename T>
SumsInputs<T> Inputs(const CheckedSums& c) {
  SumsInputs<T> in;
  in.nb = c.nbr.size(0);
  in.nnei = c.nbr.size(1);
  in.f = c.x.size(1);
  in.rows = c.x.size(0);
  in.has_a = c.has_a;
  in.a = c.has_a ? c.a.data_ptr<T>() : nullptr;
  if (c.wa.defined()) {
    in.c = c.wa.size(0);
    in.wa = c.wa.data_ptr<T>();
    in.wat = c.wat.data_ptr<T>();
    in.ba = c.ba.data_ptr<T>();
  }
  in.x = c.x.data_ptr<T>();
  in.nbr = c.nbr.data_ptr<int64_t>();
  in.w = c.w.data_ptr<T>();
  in.h2 = c.h2.data_ptr<T>();
  return in;
}

std::tuple<at::Tensor, at::Tensor> NeighborSumsCpu(const at::Tensor& a, const at::Tensor& wa, const at::Tensor& ba,
                                                   const at::Tensor& x, const at::Tensor& nbr, const at::Tensor& w,
                                                   const at::Tensor& h2) {
  const CheckedSums c = Check(a, wa, ba, x, nbr, w, h2);
  const int64_t nb = c.nbr.size(0), f = c.x.size(1);
  at::Tensor conv = at::empty({nb, c.has_a ? f : 0}, c.x.options()), hx = at::empty({nb, 3, f}, c.x.options());
  AT_DISPATCH_FLOATING_TYPES(c.x.scalar_type(), "neighbor_sums", [&] {
    const SumsInputs<scalar_t> in = Inputs<scalar_t>(c);
    const SumsOutputs<scalar_t> out{conv.data_ptr<scalar_t>(), hx.data_ptr<scalar_t>()};
    at::parallel_for(0, nb, kGrain, [&](int64_t b0, int64_t b1) { SumsForward(in, out, b0, b1); });
  });
  return {conv, hx};
}

class NeighborSumsFunction : public torch::autograd::Function<NeighborSumsFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& wa, const at::Tensor& ba,
                               const at::Tensor& x, const at::Tensor& nbr, const at::Tensor& w, const at::Tensor& h2) {
    TORCH_CHECK(!wa.requires_grad() && !ba.requires_grad(), kOp,
                " is an inference kernel: it differentiates the inputs, not the projection's weights; train with "
                "the reference formulation (deepmd.dpkit's default)");
    ctx->save_for_backward({a, wa, ba, x, nbr, w, h2});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kOp, "").typed<decltype(NeighborSumsCpu)>();
    auto [conv, hx] = op.call(a, wa, ba, x, nbr, w, h2);
    return {conv, hx};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(), kOp,
                " is differentiable once only (create_graph=True asks for a second derivative); use the reference "
                "formulation (export --reference-layers) for that");
    const variable_list s = ctx->get_saved_variables();
    const CheckedSums c = Check(s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    const int64_t nb = c.nbr.size(0), f = c.x.size(1);
    const at::Tensor g_conv = grads[0].defined() || !c.has_a ? grads[0] : at::zeros({nb, f}, c.x.options());
    const at::Tensor g_hx = grads[1].defined() ? grads[1].contiguous() : at::zeros({nb, 3, f}, c.x.options());
    const at::Tensor g_conv_c = c.has_a ? g_conv.contiguous() : g_conv;
    at::Tensor g_a = c.has_a ? at::empty_like(c.a) : at::Tensor(), g_x = at::zeros_like(c.x);
    at::Tensor g_w = at::empty_like(c.w), g_h2 = at::empty_like(c.h2);
    AT_DISPATCH_FLOATING_TYPES(c.x.scalar_type(), "neighbor_sums_backward", [&] {
      const SumsInputs<scalar_t> in = Inputs<scalar_t>(c);
      SumsGradients<scalar_t> g;
      g.g_conv = c.has_a ? g_conv_c.data_ptr<scalar_t>() : nullptr;
      g.g_hx = g_hx.data_ptr<scalar_t>();
      g.a = c.has_a ? g_a.data_ptr<scalar_t>() : nullptr;
      g.x = g_x.data_ptr<scalar_t>();
      g.w = g_w.data_ptr<scalar_t>();
      g.h2 = g_h2.data_ptr<scalar_t>();
      SumsBackward(in, g, 0, nb);  // one range: neighbours' rows of x are shared
    });
    const at::Tensor none;
    return {g_a, none, none, g_x, none, g_w, g_h2};
  }
};

std::tuple<at::Tensor, at::Tensor> NeighborSumsAutograd(const at::Tensor& a, const at::Tensor& wa, const at::Tensor& ba,
                                                        const at::Tensor& x, const at::Tensor& nbr, const at::Tensor& w,
                                                        const at::Tensor& h2) {
  variable_list out = NeighborSumsFunction::apply(a, wa, ba, x, nbr, w, h2);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace deepmd::kernels

TORCH_LIBRARY_FRAGMENT(deepmd_kernels, m) {
  m.def(
      "neighbor_sums(Tensor a, Tensor wa, Tensor ba, Tensor x, Tensor nbr, Tensor w, Tensor h2) -> (Tensor conv, "
      "Tensor hx)");
}

TORCH_LIBRARY_IMPL(deepmd_kernels, CPU, m) { m.impl("neighbor_sums", deepmd::kernels::NeighborSumsCpu); }

TORCH_LIBRARY_IMPL(deepmd_kernels, Autograd, m) { m.impl("neighbor_sums", deepmd::kernels::NeighborSumsAutograd); }
