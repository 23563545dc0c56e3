// Registers deepmd_kernels::repformer_attention (repformer_attention.h): schema, CPU kernel, and an
// Autograd kernel whose torch::autograd::Function calls the hand-written backward. Differentiable once,
// as repflow_angle (ops.cc).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "deepmd/kernels/repformer_attention.h"

namespace deepmd::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 4;  // centres per task when intra-op threads are enabled
constexpr const char* kOp = "deepmd_kernels::repformer_attention";

struct CheckedAttention {
  at::Tensor q, k, v, h2, sw, mask;
  int64_t nh = 0;
};

CheckedAttention Check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& h2,
                       const at::Tensor& sw, const at::Tensor& mask, int64_t nhead) {
  TORCH_CHECK(q.dim() == 3 && v.dim() == 3, kOp, ": q [nb, nnei, nhead * hidden] and v [nb, nnei, nhead * ng2] ",
              "must be 3-d, got ", q.sizes(), ", ", v.sizes());
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble, kOp, ": float32 or float64 only, got ",
              q.scalar_type());
  const int64_t nb = q.size(0), N = q.size(1);
  TORCH_CHECK(nhead > 0 && q.size(2) % nhead == 0 && v.size(2) % nhead == 0, kOp, ": nhead=", nhead,
              " must divide q's and v's widths (", q.size(2), ", ", v.size(2), ")");
  TORCH_CHECK(mask.sizes() == at::IntArrayRef({nb, N}) && mask.scalar_type() == at::kBool, kOp,
              ": mask must be bool [nb, nnei] = [", nb, ", ", N, "], got ", mask.scalar_type(), " ", mask.sizes());
  auto expect = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape) {
    TORCH_CHECK(t.sizes() == shape, kOp, ": ", name, " must have shape ", shape, ", got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == q.scalar_type(), kOp, ": ", name, " is ", t.scalar_type(), ", q is ",
                q.scalar_type());
    TORCH_CHECK(t.device().is_cpu(), kOp, ": CPU tensors only, ", name, " is on ", t.device());
    return t.contiguous();
  };
  TORCH_CHECK(mask.device().is_cpu(), kOp, ": CPU tensors only, mask is on ", mask.device());
  return {expect(q, "q", {nb, N, q.size(2)}),
          expect(k, "k", {nb, N, q.size(2)}),
          expect(v, "v", {nb, N, v.size(2)}),
          expect(h2, "h2", {nb, N, 3}),
          expect(sw, "sw", {nb, N}),
          mask.contiguous(),
          nhead};
}

template <typename T>
AttentionInputs<T> Inputs(const CheckedAttention& c, bool gate, bool smooth, double shift) {
  AttentionInputs<T> in;
  in.nb = c.q.size(0);
  in.nnei = c.q.size(1);
  in.nh = c.nh;
  in.nd = c.q.size(2) / c.nh;
  in.nv = c.v.size(2) / c.nh;
  in.q = c.q.data_ptr<T>();
  in.k = c.k.data_ptr<T>();
  in.v = c.v.data_ptr<T>();
  in.h2 = c.h2.data_ptr<T>();
  in.sw = c.sw.data_ptr<T>();
  in.real = c.mask.data_ptr<bool>();
  in.gate = gate;
  in.smooth = smooth;
  in.shift = static_cast<T>(shift);
  return in;
}

at::Tensor RepformerAttentionCpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& h2,
                                 const at::Tensor& sw, const at::Tensor& mask, int64_t nhead, bool gate, bool smooth,
                                 double shift) {
  const CheckedAttention c = Check(q, k, v, h2, sw, mask, nhead);
  at::Tensor out = at::empty(c.v.sizes(), c.v.options());
  AT_DISPATCH_FLOATING_TYPES(c.q.scalar_type(), "repformer_attention", [&] {
    const AttentionInputs<scalar_t> in = Inputs<scalar_t>(c, gate, smooth, shift);
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, in.nb, kGrain, [&](int64_t b0, int64_t b1) { AttentionForward(in, o, b0, b1); });
  });
  return out;
}

class RepformerAttentionFunction : public torch::autograd::Function<RepformerAttentionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& h2, const at::Tensor& sw, const at::Tensor& mask, int64_t nhead,
                               bool gate, bool smooth, double shift) {
    ctx->save_for_backward({q, k, v, h2, sw, mask});
    ctx->saved_data["nhead"] = nhead;
    ctx->saved_data["gate"] = gate;
    ctx->saved_data["smooth"] = smooth;
    ctx->saved_data["shift"] = shift;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(kOp, "").typed<decltype(RepformerAttentionCpu)>();
    return {op.call(q, k, v, h2, sw, mask, nhead, gate, smooth, shift)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(), kOp,
                " is differentiable once only (create_graph=True asks for a second derivative); use the reference "
                "formulation (export --reference-layers) for that");
    const variable_list s = ctx->get_saved_variables();
    const CheckedAttention c = Check(s[0], s[1], s[2], s[3], s[4], s[5], ctx->saved_data["nhead"].toInt());
    const at::Tensor g_out = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(c.v);
    at::Tensor g_q = at::empty_like(c.q), g_k = at::empty_like(c.k), g_v = at::empty_like(c.v);
    at::Tensor g_h2 = at::empty_like(c.h2), g_sw = at::empty_like(c.sw);
    AT_DISPATCH_FLOATING_TYPES(c.q.scalar_type(), "repformer_attention_backward", [&] {
      const AttentionInputs<scalar_t> in =
          Inputs<scalar_t>(c, ctx->saved_data["gate"].toBool(), ctx->saved_data["smooth"].toBool(),
                           ctx->saved_data["shift"].toDouble());
      AttentionGradients<scalar_t> g;
      g.g_out = g_out.data_ptr<scalar_t>();
      g.q = g_q.data_ptr<scalar_t>();
      g.k = g_k.data_ptr<scalar_t>();
      g.v = g_v.data_ptr<scalar_t>();
      g.h2 = g_h2.data_ptr<scalar_t>();
      g.sw = g_sw.data_ptr<scalar_t>();
      // every gradient row belongs to one centre's slot: centres run independently
      at::parallel_for(0, in.nb, kGrain, [&](int64_t b0, int64_t b1) { AttentionBackward(in, g, b0, b1); });
    });
    const at::Tensor none;
    return {g_q, g_k, g_v, g_h2, g_sw, none, none, none, none, none};
  }
};

at::Tensor RepformerAttentionAutograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& h2, const at::Tensor& sw, const at::Tensor& mask,
                                      int64_t nhead, bool gate, bool smooth, double shift) {
  return RepformerAttentionFunction::apply(q, k, v, h2, sw, mask, nhead, gate, smooth, shift)[0];
}

}  // namespace
}  // namespace deepmd::kernels

TORCH_LIBRARY_FRAGMENT(deepmd_kernels, m) {
  m.def(
      "repformer_attention(Tensor q, Tensor k, Tensor v, Tensor h2, Tensor sw, Tensor mask, int nhead, bool gate, "
      "bool smooth, float shift) -> Tensor");
}

TORCH_LIBRARY_IMPL(deepmd_kernels, CPU, m) { m.impl("repformer_attention", deepmd::kernels::RepformerAttentionCpu); }

TORCH_LIBRARY_IMPL(deepmd_kernels, Autograd, m) {
  m.impl("repformer_attention", deepmd::kernels::RepformerAttentionAutograd);
}
