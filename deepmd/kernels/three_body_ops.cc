// Registers deepmd_kernels::three_body (three_body.h): schema, CPU kernel, and an Autograd kernel whose
// torch::autograd::Function calls the hand-written backward. Differentiable once, as repflow_angle
// (ops.cc).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

#include "deepmd/kernels/three_body.h"

namespace deepmd::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 4;  // centres per task when intra-op threads are enabled
constexpr const char* kOp = "deepmd_kernels::three_body";

// The embedding network packed in one buffer: the first layer's ws, b0, idt0 [h0 each], then per layer
// l = 1 .. L its W [h_{l-1}, h_l], b [h_l] and idt [h_l] (ones where the layer has none); widths
// [h0 .. hL], residual [L] (0, 1: + x, 2: + (x, x)).
struct CheckedThreeBody {
  at::Tensor r, mask, pj, pk, params, transposed;  // transposed: each W_lᵀ, packed in order
  std::vector<int64_t> widths, residual;
};

CheckedThreeBody Check(const at::Tensor& r, const at::Tensor& mask, const at::Tensor& pj, const at::Tensor& pk,
                       const at::Tensor& params, at::IntArrayRef widths, at::IntArrayRef residual, int64_t act) {
  TORCH_CHECK(r.dim() == 3 && r.size(2) == 3, kOp, ": r must be [nb, nnei, 3], got ", r.sizes());
  TORCH_CHECK(r.scalar_type() == at::kFloat || r.scalar_type() == at::kDouble, kOp, ": float32 or float64 only, got ",
              r.scalar_type());
  TORCH_CHECK(IsSupported(act), kOp, ": activation kind ", act, " is not one the kernel implements (0, 1, 7, 8)");
  const int64_t nb = r.size(0), N = r.size(1);
  TORCH_CHECK(!widths.empty() && residual.size() + 1 == widths.size(), kOp, ": widths [h0 .. hL] (", widths.size(),
              " given) and residual [L] (", residual.size(), " given) disagree");
  TORCH_CHECK(widths[0] > 0, kOp, ": layer widths must be positive, got ", widths);
  int64_t total = 3 * widths[0];
  for (size_t l = 1; l < widths.size(); ++l) {
    const int64_t in = widths[l - 1], out = widths[l], res = residual[l - 1];
    TORCH_CHECK(in > 0 && out > 0, kOp, ": layer widths must be positive, got ", widths);
    TORCH_CHECK(res == 0 || (res == 1 && out == in) || (res == 2 && out == 2 * in), kOp, ": layer ", l,
                " has residual ", res, " with widths ", in, " -> ", out, " (1 needs equal widths, 2 doubling)");
    total += in * out + 2 * out;
  }
  TORCH_CHECK(mask.sizes() == at::IntArrayRef({nb, N}) && mask.scalar_type() == at::kBool && mask.device().is_cpu(),
              kOp, ": mask must be a CPU bool tensor [nb, nnei] = [", nb, ", ", N, "], got ", mask.scalar_type(), " ",
              mask.sizes());
  auto expect = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape) {
    TORCH_CHECK(t.sizes() == shape, kOp, ": ", name, " must have shape ", shape, ", got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == r.scalar_type(), kOp, ": ", name, " is ", t.scalar_type(), ", r is ",
                r.scalar_type());
    TORCH_CHECK(t.device().is_cpu(), kOp, ": CPU tensors only, ", name, " is on ", t.device());
    return t.contiguous();
  };
  CheckedThreeBody c{expect(r, "r", {nb, N, 3}),
                     mask.contiguous(),
                     expect(pj, "pj", {nb, N, widths[0]}),
                     expect(pk, "pk", {nb, N, widths[0]}),
                     expect(params, "params", {total}),
                     at::Tensor(),
                     widths.vec(),
                     residual.vec()};
  std::vector<at::Tensor> wt;
  int64_t offset = 3 * widths[0];
  for (size_t l = 1; l < widths.size(); ++l) {
    const int64_t in = widths[l - 1], out = widths[l];
    wt.push_back(c.params.narrow(0, offset, in * out).view({in, out}).t().contiguous().view({-1}));
    offset += in * out + 2 * out;
  }
  c.transposed = wt.empty() ? at::empty({0}, r.options()) : at::cat(wt);
  return c;
}

template <typename T>
ThreeBodyInputs<T> Inputs(const CheckedThreeBody& c, int64_t act, double threshold, double slope, double shift) {
  ThreeBodyInputs<T> in;
  in.nb = c.r.size(0);
  in.nnei = c.r.size(1);
  in.h0 = c.widths[0];
  in.r = c.r.data_ptr<T>();
  in.real = c.mask.data_ptr<bool>();
  in.pj = c.pj.data_ptr<T>();
  in.pk = c.pk.data_ptr<T>();
  const T* p = c.params.data_ptr<T>();
  in.ws = p;
  in.b0 = p + in.h0;
  in.idt0 = p + 2 * in.h0;
  p += 3 * in.h0;
  const T* t = c.transposed.numel() ? c.transposed.data_ptr<T>() : nullptr;
  for (size_t l = 1; l < c.widths.size(); ++l) {
    EmbeddingLayer<T> L;
    L.in = c.widths[l - 1];
    L.out = c.widths[l];
    L.residual = c.residual[l - 1];
    L.w = p;
    L.b = p + L.in * L.out;
    L.idt = L.b + L.out;
    L.wt = t;
    p = L.idt + L.out;
    t += L.in * L.out;
    in.layers.push_back(L);
  }
  in.act = Act{static_cast<ActKind>(act), threshold, slope, shift};
  return in;
}

at::Tensor ThreeBodyCpu(const at::Tensor& r, const at::Tensor& mask, const at::Tensor& pj, const at::Tensor& pk,
                        const at::Tensor& params, at::IntArrayRef widths, at::IntArrayRef residual, int64_t act,
                        double threshold, double slope, double shift) {
  const CheckedThreeBody c = Check(r, mask, pj, pk, params, widths, residual, act);
  at::Tensor out = at::empty({c.r.size(0), c.widths.back()}, c.r.options());
  AT_DISPATCH_FLOATING_TYPES(c.r.scalar_type(), "three_body", [&] {
    const ThreeBodyInputs<scalar_t> in = Inputs<scalar_t>(c, act, threshold, slope, shift);
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, in.nb, kGrain, [&](int64_t b0, int64_t b1) { ThreeBodyForward(in, o, b0, b1); });
  });
  return out;
}

class ThreeBodyFunction : public torch::autograd::Function<ThreeBodyFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& r, const at::Tensor& mask, const at::Tensor& pj,
                               const at::Tensor& pk, const at::Tensor& params, at::IntArrayRef widths,
                               at::IntArrayRef residual, int64_t act, double threshold, double slope, double shift) {
    TORCH_CHECK(!params.requires_grad(), kOp,
                " is an inference kernel: it differentiates the inputs, not the weights; train with the "
                "reference formulation (deepmd.dpkit's default)");
    ctx->save_for_backward({r, mask, pj, pk, params});
    ctx->saved_data["widths"] = widths.vec();
    ctx->saved_data["residual"] = residual.vec();
    ctx->saved_data["act"] = act;
    ctx->saved_data["threshold"] = threshold;
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["shift"] = shift;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kOp, "").typed<decltype(ThreeBodyCpu)>();
    return {op.call(r, mask, pj, pk, params, widths, residual, act, threshold, slope, shift)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(), kOp,
                " is differentiable once only (create_graph=True asks for a second derivative); use the reference "
                "formulation (export --reference-layers) for that");
    const variable_list s = ctx->get_saved_variables();
    const std::vector<int64_t> widths = ctx->saved_data["widths"].toIntVector();
    const std::vector<int64_t> residual = ctx->saved_data["residual"].toIntVector();
    const int64_t act = ctx->saved_data["act"].toInt();
    const CheckedThreeBody c = Check(s[0], s[1], s[2], s[3], s[4], widths, residual, act);
    const at::Tensor g_out =
        grads[0].defined() ? grads[0].contiguous() : at::zeros({c.r.size(0), widths.back()}, c.r.options());
    at::Tensor g_r = at::empty_like(c.r), g_pj = at::empty_like(c.pj), g_pk = at::empty_like(c.pk);
    AT_DISPATCH_FLOATING_TYPES(c.r.scalar_type(), "three_body_backward", [&] {
      const ThreeBodyInputs<scalar_t> in =
          Inputs<scalar_t>(c, act, ctx->saved_data["threshold"].toDouble(), ctx->saved_data["slope"].toDouble(),
                           ctx->saved_data["shift"].toDouble());
      ThreeBodyGradients<scalar_t> g;
      g.g_out = g_out.data_ptr<scalar_t>();
      g.r = g_r.data_ptr<scalar_t>();
      g.pj = g_pj.data_ptr<scalar_t>();
      g.pk = g_pk.data_ptr<scalar_t>();
      at::parallel_for(0, in.nb, kGrain, [&](int64_t b0, int64_t b1) { ThreeBodyBackward(in, g, b0, b1); });
    });
    const at::Tensor none;
    return {g_r, none, g_pj, g_pk, none, none, none, none, none, none, none};
  }
};

at::Tensor ThreeBodyAutograd(const at::Tensor& r, const at::Tensor& mask, const at::Tensor& pj, const at::Tensor& pk,
                             const at::Tensor& params, at::IntArrayRef widths, at::IntArrayRef residual, int64_t act,
                             double threshold, double slope, double shift) {
  return ThreeBodyFunction::apply(r, mask, pj, pk, params, widths, residual, act, threshold, slope, shift)[0];
}

}  // namespace
}  // namespace deepmd::kernels

TORCH_LIBRARY_FRAGMENT(deepmd_kernels, m) {
  m.def(
      "three_body(Tensor r, Tensor mask, Tensor pj, Tensor pk, Tensor params, int[] widths, int[] residual, int act, "
      "float threshold, float slope, float shift) -> Tensor");
}

TORCH_LIBRARY_IMPL(deepmd_kernels, CPU, m) { m.impl("three_body", deepmd::kernels::ThreeBodyCpu); }

TORCH_LIBRARY_IMPL(deepmd_kernels, Autograd, m) { m.impl("three_body", deepmd::kernels::ThreeBodyAutograd); }
