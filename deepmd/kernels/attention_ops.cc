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
  at::Tensor g2, h2, sw, mask;
  at::Tensor wq, wk, wv, wo, wqt, wkt, wvt, wot, bq, bk, bv, bo;  // per head (repformer_attention.h)
  int64_t nh = 0, nd = 0, nv = 0;
};

// The weights as given: wq, wk [ng2, nh·nd] and wv [ng2, nh·nv] with head-major columns, wo [nh·nv, ng2]
// with head-major rows, biases [nh·nd], [nh·nv], [ng2].
CheckedAttention Check(const at::Tensor& g2, const at::Tensor& h2, const at::Tensor& sw, const at::Tensor& mask,
                       const at::Tensor& wq, const at::Tensor& bq, const at::Tensor& wk, const at::Tensor& bk,
                       const at::Tensor& wv, const at::Tensor& bv, const at::Tensor& wo, const at::Tensor& bo,
                       int64_t nhead) {
  TORCH_CHECK(g2.dim() == 3, kOp, ": g2 must be [nb, nnei, ng2], got ", g2.sizes());
  TORCH_CHECK(g2.scalar_type() == at::kFloat || g2.scalar_type() == at::kDouble, kOp, ": float32 or float64 only, got ",
              g2.scalar_type());
  TORCH_CHECK(wq.dim() == 2 && wv.dim() == 2, kOp,
              ": wq [ng2, nhead * hidden] and wv [ng2, nhead * value width] must be ", "matrices, got ", wq.sizes(),
              ", ", wv.sizes());
  const int64_t nb = g2.size(0), N = g2.size(1), ng2 = g2.size(2);
  TORCH_CHECK(nhead > 0 && wq.size(1) % nhead == 0 && wv.size(1) % nhead == 0, kOp, ": nhead=", nhead,
              " must divide the query and value widths (", wq.size(1), ", ", wv.size(1), ")");
  const int64_t nd = wq.size(1) / nhead, nv = wv.size(1) / nhead;
  TORCH_CHECK(mask.sizes() == at::IntArrayRef({nb, N}) && mask.scalar_type() == at::kBool, kOp,
              ": mask must be bool [nb, nnei] = [", nb, ", ", N, "], got ", mask.scalar_type(), " ", mask.sizes());
  TORCH_CHECK(mask.device().is_cpu(), kOp, ": CPU tensors only, mask is on ", mask.device());
  auto expect = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape) {
    TORCH_CHECK(t.sizes() == shape, kOp, ": ", name, " must have shape ", shape, ", got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == g2.scalar_type(), kOp, ": ", name, " is ", t.scalar_type(), ", g2 is ",
                g2.scalar_type());
    TORCH_CHECK(t.device().is_cpu(), kOp, ": CPU tensors only, ", name, " is on ", t.device());
    return t.contiguous();
  };
  CheckedAttention c;
  c.g2 = expect(g2, "g2", {nb, N, ng2});
  c.h2 = expect(h2, "h2", {nb, N, 3});
  c.sw = expect(sw, "sw", {nb, N});
  c.mask = mask.contiguous();
  c.nh = nhead;
  c.nd = nd;
  c.nv = nv;
  // [ng2, nh·x] -> per head [nh, ng2, x] and transposed [nh, x, ng2]
  auto heads = [&](const at::Tensor& w, int64_t x) { return w.view({ng2, nhead, x}).permute({1, 0, 2}).contiguous(); };
  auto heads_t = [&](const at::Tensor& w, int64_t x) {
    return w.view({ng2, nhead, x}).permute({1, 2, 0}).contiguous();
  };
  const at::Tensor q = expect(wq, "wq", {ng2, nhead * nd}), k = expect(wk, "wk", {ng2, nhead * nd});
  const at::Tensor v = expect(wv, "wv", {ng2, nhead * nv}), o = expect(wo, "wo", {nhead * nv, ng2});
  c.wq = heads(q, nd);
  c.wk = heads(k, nd);
  c.wv = heads(v, nv);
  c.wqt = heads_t(q, nd);
  c.wkt = heads_t(k, nd);
  c.wvt = heads_t(v, nv);
  c.wo = o;  // [nh·nv, ng2]: head h's rows are already one block
  c.wot = o.view({nhead, nv, ng2}).transpose(1, 2).contiguous();
  c.bq = expect(bq, "bq", {nhead * nd});
  c.bk = expect(bk, "bk", {nhead * nd});
  c.bv = expect(bv, "bv", {nhead * nv});
  c.bo = expect(bo, "bo", {ng2});
  return c;
}

template <typename T>
AttentionInputs<T> Inputs(const CheckedAttention& c, bool gate, bool smooth, double shift) {
  AttentionInputs<T> in;
  in.nb = c.g2.size(0);
  in.nnei = c.g2.size(1);
  in.ng2 = c.g2.size(2);
  in.nh = c.nh;
  in.nd = c.nd;
  in.nv = c.nv;
  in.g2 = c.g2.data_ptr<T>();
  in.h2 = c.h2.data_ptr<T>();
  in.sw = c.sw.data_ptr<T>();
  in.real = c.mask.data_ptr<bool>();
  in.wq = c.wq.data_ptr<T>();
  in.wk = c.wk.data_ptr<T>();
  in.wv = c.wv.data_ptr<T>();
  in.wo = c.wo.data_ptr<T>();
  in.wqt = c.wqt.data_ptr<T>();
  in.wkt = c.wkt.data_ptr<T>();
  in.wvt = c.wvt.data_ptr<T>();
  in.wot = c.wot.data_ptr<T>();
  in.bq = c.bq.data_ptr<T>();
  in.bk = c.bk.data_ptr<T>();
  in.bv = c.bv.data_ptr<T>();
  in.bo = c.bo.data_ptr<T>();
  in.gate = gate;
  in.smooth = smooth;
  in.shift = static_cast<T>(shift);
  return in;
}

at::Tensor RepformerAttentionCpu(const at::Tensor& g2, const at::Tensor& h2, const at::Tensor& sw,
                                 const at::Tensor& mask, const at::Tensor& wq, const at::Tensor& bq,
                                 const at::Tensor& wk, const at::Tensor& bk, const at::Tensor& wv, const at::Tensor& bv,
                                 const at::Tensor& wo, const at::Tensor& bo, int64_t nhead, bool gate, bool smooth,
                                 double shift) {
  const CheckedAttention c = Check(g2, h2, sw, mask, wq, bq, wk, bk, wv, bv, wo, bo, nhead);
  at::Tensor out = at::empty(c.g2.sizes(), c.g2.options());
  AT_DISPATCH_FLOATING_TYPES(c.g2.scalar_type(), "repformer_attention", [&] {
    const AttentionInputs<scalar_t> in = Inputs<scalar_t>(c, gate, smooth, shift);
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, in.nb, kGrain, [&](int64_t b0, int64_t b1) { AttentionForward(in, o, b0, b1); });
  });
  return out;
}

class RepformerAttentionFunction : public torch::autograd::Function<RepformerAttentionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& g2, const at::Tensor& h2, const at::Tensor& sw,
                               const at::Tensor& mask, const at::Tensor& wq, const at::Tensor& bq, const at::Tensor& wk,
                               const at::Tensor& bk, const at::Tensor& wv, const at::Tensor& bv, const at::Tensor& wo,
                               const at::Tensor& bo, int64_t nhead, bool gate, bool smooth, double shift) {
    for (const at::Tensor* w : {&wq, &bq, &wk, &bk, &wv, &bv, &wo, &bo}) {
      TORCH_CHECK(!w->requires_grad(), kOp,
                  " is an inference kernel: it differentiates the inputs, not the weights; train with the "
                  "reference formulation (deepmd.dpkit's default)");
    }
    ctx->save_for_backward({g2, h2, sw, mask, wq, bq, wk, bk, wv, bv, wo, bo});
    ctx->saved_data["nhead"] = nhead;
    ctx->saved_data["gate"] = gate;
    ctx->saved_data["smooth"] = smooth;
    ctx->saved_data["shift"] = shift;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(kOp, "").typed<decltype(RepformerAttentionCpu)>();
    return {op.call(g2, h2, sw, mask, wq, bq, wk, bk, wv, bv, wo, bo, nhead, gate, smooth, shift)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(), kOp,
                " is differentiable once only (create_graph=True asks for a second derivative); use the reference "
                "formulation (export --reference-layers) for that");
    const variable_list s = ctx->get_saved_variables();
    const CheckedAttention c = Check(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11],
                                     ctx->saved_data["nhead"].toInt());
    const at::Tensor g_out = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(c.g2);
    at::Tensor g_g2 = at::empty_like(c.g2), g_h2 = at::empty_like(c.h2), g_sw = at::empty_like(c.sw);
    AT_DISPATCH_FLOATING_TYPES(c.g2.scalar_type(), "repformer_attention_backward", [&] {
      const AttentionInputs<scalar_t> in = Inputs<scalar_t>(
          c, ctx->saved_data["gate"].toBool(), ctx->saved_data["smooth"].toBool(), ctx->saved_data["shift"].toDouble());
      AttentionGradients<scalar_t> g;
      g.g_out = g_out.data_ptr<scalar_t>();
      g.g2 = g_g2.data_ptr<scalar_t>();
      g.h2 = g_h2.data_ptr<scalar_t>();
      g.sw = g_sw.data_ptr<scalar_t>();
      // every gradient row belongs to one centre's slot: centres run independently
      at::parallel_for(0, in.nb, kGrain, [&](int64_t b0, int64_t b1) { AttentionBackward(in, g, b0, b1); });
    });
    const at::Tensor none;
    return {g_g2, g_h2, g_sw, none, none, none, none, none, none, none, none, none, none, none, none, none};
  }
};

at::Tensor RepformerAttentionAutograd(const at::Tensor& g2, const at::Tensor& h2, const at::Tensor& sw,
                                      const at::Tensor& mask, const at::Tensor& wq, const at::Tensor& bq,
                                      const at::Tensor& wk, const at::Tensor& bk, const at::Tensor& wv,
                                      const at::Tensor& bv, const at::Tensor& wo, const at::Tensor& bo, int64_t nhead,
                                      bool gate, bool smooth, double shift) {
  return RepformerAttentionFunction::apply(g2, h2, sw, mask, wq, bq, wk, bk, wv, bv, wo, bo, nhead, gate, smooth,
                                           shift)[0];
}

}  // namespace
}  // namespace deepmd::kernels

TORCH_LIBRARY_FRAGMENT(deepmd_kernels, m) {
  m.def(
      "repformer_attention(Tensor g2, Tensor h2, Tensor sw, Tensor mask, Tensor wq, Tensor bq, Tensor wk, Tensor bk, "
      "Tensor wv, Tensor bv, Tensor wo, Tensor bo, int nhead, bool gate, bool smooth, float shift) -> Tensor");
}

TORCH_LIBRARY_IMPL(deepmd_kernels, CPU, m) { m.impl("repformer_attention", deepmd::kernels::RepformerAttentionCpu); }

TORCH_LIBRARY_IMPL(deepmd_kernels, Autograd, m) {
  m.impl("repformer_attention", deepmd::kernels::RepformerAttentionAutograd);
}
