// Registers deepmd_kernels::repflow_angle with PyTorch: schema, CPU kernel, and an Autograd kernel
// whose torch::autograd::Function calls the hand-written backward (repflow_angle.h). Differentiable
// once: the backward is not itself recorded, so a double backward is refused rather than wrong.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "deepmd/kernels/isa.h"
#include "deepmd/kernels/repflow_angle.h"

namespace deepmd::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 8;  // centres per task when intra-op threads are enabled

struct Checked {
  at::Tensor angle, real, sw, pe, qe, we, pa, qa, wa, res;
  at::Tensor offset;  // [nb + 1] int64: each centre's first packed pair
};

Checked Check(const at::Tensor& angle, const at::Tensor& real, const at::Tensor& sw, const at::Tensor& pe,
              const at::Tensor& qe, const at::Tensor& we, const at::Tensor& pa, const at::Tensor& qa,
              const at::Tensor& wa, const at::Tensor& res, int64_t act) {
  const char* op = "deepmd_kernels::repflow_angle";
  TORCH_CHECK(real.dim() == 2 && real.scalar_type() == at::kBool && real.device().is_cpu(), op,
              ": a_mask must be a CPU bool tensor [nb, A], got ", real.scalar_type(), " ", real.sizes());
  TORCH_CHECK(angle.dim() == 2, op, ": angle must be packed [pairs, a_dim] (angle[a_mask_j & a_mask_k]), got ",
              angle.sizes());
  const int64_t nb = real.size(0), A = real.size(1), a = angle.size(1), e = we.size(-1);
  TORCH_CHECK(angle.scalar_type() == at::kFloat || angle.scalar_type() == at::kDouble, op,
              ": float32 or float64 only, got ", angle.scalar_type());
  const at::Tensor real_c = real.contiguous();
  at::Tensor offset = at::empty({nb + 1}, at::kLong);
  PairOffsets(real_c.data_ptr<bool>(), nb, A, offset.data_ptr<int64_t>());
  const int64_t pairs = offset.data_ptr<int64_t>()[nb];
  TORCH_CHECK(angle.size(0) == pairs, op, ": angle has ", angle.size(0), " rows but a_mask has ", pairs,
              " real pairs (the sum over centres of the squared real-slot count); pack the angles of exactly the "
              "pairs a_mask_j & a_mask_k, centre by centre in slot order");
  TORCH_CHECK(IsSupported(act), op, ": activation kind ", act, " is not one the kernel implements (0, 1, 7, 8)");
  auto expect = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape) {
    TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == angle.scalar_type(), op, ": ", name, " is ", t.scalar_type(), ", angle is ",
                angle.scalar_type());
    TORCH_CHECK(t.device().is_cpu(), op, ": CPU tensors only, ", name, " is on ", t.device());
    return t.contiguous();
  };
  TORCH_CHECK(we.dim() == 2, op, ": w_edge must be [a_dim, e_dim], got ", we.sizes());
  return {expect(angle, "angle", {pairs, a}),
          real_c,
          expect(sw, "a_sw", {nb, A}),
          expect(pe, "p_edge", {nb, A, e}),
          expect(qe, "q_edge", {nb, A, e}),
          expect(we, "w_edge", {a, e}),
          expect(pa, "p_angle", {nb, A, a}),
          expect(qa, "q_angle", {nb, A, a}),
          expect(wa, "w_angle", {a, a}),
          expect(res, "residual", {a}),
          offset};
}

template <typename T>
AngleInputs<T> Inputs(const Checked& c, double alpha, int64_t act, double threshold, double slope, double shift,
                      double scale, bool update) {
  AngleInputs<T> in;
  in.nb = c.real.size(0);
  in.nang = c.real.size(1);
  in.a = c.angle.size(1);
  in.e = c.we.size(1);
  in.angle = c.angle.data_ptr<T>();
  in.real = c.real.data_ptr<bool>();
  in.offset = c.offset.data_ptr<int64_t>();
  in.sw = c.sw.data_ptr<T>();
  in.pe = c.pe.data_ptr<T>();
  in.qe = c.qe.data_ptr<T>();
  in.we = c.we.data_ptr<T>();
  in.pa = c.pa.data_ptr<T>();
  in.qa = c.qa.data_ptr<T>();
  in.wa = c.wa.data_ptr<T>();
  in.res = c.res.data_ptr<T>();
  in.alpha = static_cast<T>(alpha);
  in.inv_scale = static_cast<T>(1.0 / scale);
  in.act = Act{static_cast<ActKind>(act), threshold, slope, shift};
  in.update = update;
  return in;
}

std::tuple<at::Tensor, at::Tensor> RepflowAngleCpu(const at::Tensor& angle, const at::Tensor& a_mask,
                                                   const at::Tensor& a_sw, const at::Tensor& p_edge,
                                                   const at::Tensor& q_edge, const at::Tensor& w_edge,
                                                   const at::Tensor& p_angle, const at::Tensor& q_angle,
                                                   const at::Tensor& w_angle, const at::Tensor& residual, double alpha,
                                                   int64_t act, double threshold, double slope, double shift,
                                                   double a_scale, bool update_angle) {
  const Checked c = Check(angle, a_mask, a_sw, p_edge, q_edge, w_edge, p_angle, q_angle, w_angle, residual, act);
  at::Tensor reduced = at::empty(p_edge.sizes(), c.angle.options());
  at::Tensor angle_new = at::empty({update_angle ? c.angle.size(0) : 0, c.angle.size(1)}, c.angle.options());
  if (reduced.numel() == 0) {  // no edge channels: angle_new still needs its update
    reduced.zero_();
  }
  AT_DISPATCH_FLOATING_TYPES(c.angle.scalar_type(), "repflow_angle", [&] {
    const AngleInputs<scalar_t> in = Inputs<scalar_t>(c, alpha, act, threshold, slope, shift, a_scale, update_angle);
    const AngleOutputs<scalar_t> out{reduced.data_ptr<scalar_t>(), angle_new.data_ptr<scalar_t>()};
    at::parallel_for(0, in.nb, kGrain, [&](int64_t b0, int64_t b1) { AngleForward(in, out, b0, b1); });
  });
  return {reduced, angle_new};
}

class RepflowAngleFunction : public torch::autograd::Function<RepflowAngleFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& angle, const at::Tensor& a_mask,
                               const at::Tensor& a_sw, const at::Tensor& p_edge, const at::Tensor& q_edge,
                               const at::Tensor& w_edge, const at::Tensor& p_angle, const at::Tensor& q_angle,
                               const at::Tensor& w_angle, const at::Tensor& residual, double alpha, int64_t act,
                               double threshold, double slope, double shift, double a_scale, bool update_angle) {
    TORCH_CHECK(!w_edge.requires_grad() && !w_angle.requires_grad() && !residual.requires_grad(),
                "deepmd_kernels::repflow_angle is an inference kernel: it differentiates the inputs, not the weights; "
                "train with the reference formulation (deepmd.dpkit's default)");
    ctx->save_for_backward({angle, a_mask, a_sw, p_edge, q_edge, w_edge, p_angle, q_angle, w_angle, residual});
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["act"] = act;
    ctx->saved_data["threshold"] = threshold;
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["shift"] = shift;
    ctx->saved_data["a_scale"] = a_scale;
    ctx->saved_data["update_angle"] = update_angle;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("deepmd_kernels::repflow_angle", "")
                               .typed<decltype(RepflowAngleCpu)>();
    auto [reduced, angle_new] = op.call(angle, a_mask, a_sw, p_edge, q_edge, w_edge, p_angle, q_angle, w_angle,
                                        residual, alpha, act, threshold, slope, shift, a_scale, update_angle);
    return {reduced, angle_new};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(),
                "deepmd_kernels::repflow_angle is differentiable once only (create_graph=True asks for a second "
                "derivative); use the reference formulation (export --reference-layers) for that");
    const variable_list s = ctx->get_saved_variables();
    const bool update = ctx->saved_data["update_angle"].toBool();
    const Checked c = Check(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], ctx->saved_data["act"].toInt());
    const at::Tensor g_reduced = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(c.pe);
    const at::Tensor g_angle_new = grads[1].defined() && update
                                       ? grads[1].contiguous()
                                       : at::zeros({update ? c.angle.size(0) : 0, c.angle.size(1)}, c.angle.options());
    at::Tensor g_angle = at::empty_like(c.angle), g_sw = at::empty_like(c.sw);
    at::Tensor g_pe = at::empty_like(c.pe), g_qe = at::empty_like(c.qe);
    at::Tensor g_pa = at::empty_like(c.pa), g_qa = at::empty_like(c.qa);
    {
      AT_DISPATCH_FLOATING_TYPES(c.angle.scalar_type(), "repflow_angle_backward", [&] {
        const AngleInputs<scalar_t> in =
            Inputs<scalar_t>(c, ctx->saved_data["alpha"].toDouble(), ctx->saved_data["act"].toInt(),
                             ctx->saved_data["threshold"].toDouble(), ctx->saved_data["slope"].toDouble(),
                             ctx->saved_data["shift"].toDouble(), ctx->saved_data["a_scale"].toDouble(), update);
        AngleGradients<scalar_t> g;
        g.g_reduced = g_reduced.data_ptr<scalar_t>();
        g.g_angle_new = g_angle_new.data_ptr<scalar_t>();
        g.angle = g_angle.data_ptr<scalar_t>();
        g.sw = g_sw.data_ptr<scalar_t>();
        g.pe = g_pe.data_ptr<scalar_t>();
        g.qe = g_qe.data_ptr<scalar_t>();
        g.pa = g_pa.data_ptr<scalar_t>();
        g.qa = g_qa.data_ptr<scalar_t>();
        at::parallel_for(0, in.nb, kGrain, [&](int64_t b0, int64_t b1) { AngleBackward(in, g, b0, b1); });
      });
    }
    const at::Tensor none;
    return {g_angle, none, g_sw, g_pe, g_qe, none, g_pa, g_qa, none, none, none, none, none, none, none, none, none};
  }
};

std::tuple<at::Tensor, at::Tensor> RepflowAngleAutograd(const at::Tensor& angle, const at::Tensor& a_mask,
                                                        const at::Tensor& a_sw, const at::Tensor& p_edge,
                                                        const at::Tensor& q_edge, const at::Tensor& w_edge,
                                                        const at::Tensor& p_angle, const at::Tensor& q_angle,
                                                        const at::Tensor& w_angle, const at::Tensor& residual,
                                                        double alpha, int64_t act, double threshold, double slope,
                                                        double shift, double a_scale, bool update_angle) {
  variable_list out =
      RepflowAngleFunction::apply(angle, a_mask, a_sw, p_edge, q_edge, w_edge, p_angle, q_angle, w_angle, residual,
                                  alpha, act, threshold, slope, shift, a_scale, update_angle);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace deepmd::kernels

TORCH_LIBRARY(deepmd_kernels, m) {
  m.def(
      "repflow_angle(Tensor angle, Tensor a_mask, Tensor a_sw, Tensor p_edge, Tensor q_edge, Tensor w_edge, Tensor "
      "p_angle, "
      "Tensor q_angle, Tensor w_angle, Tensor residual, float alpha, int act, float threshold, float slope, "
      "float shift, float a_scale, bool update_angle=True) -> (Tensor reduced, Tensor angle_new)");
  // The instruction set the kernels run on this CPU (isa.h), for logs, benchmarks and tests.
  m.def("instruction_set() -> str", [] { return std::string(deepmd::kernels::IsaName(deepmd::kernels::CpuIsa())); });
}

TORCH_LIBRARY_IMPL(deepmd_kernels, CPU, m) { m.impl("repflow_angle", deepmd::kernels::RepflowAngleCpu); }

TORCH_LIBRARY_IMPL(deepmd_kernels, Autograd, m) { m.impl("repflow_angle", deepmd::kernels::RepflowAngleAutograd); }
