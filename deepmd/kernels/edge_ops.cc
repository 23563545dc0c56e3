// Registers deepmd_kernels::repflow_edge (repflow_edge.h): schema, CPU kernel, and an Autograd kernel
// whose torch::autograd::Function calls the hand-written backward. Differentiable once, as
// repflow_angle (ops.cc).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "deepmd/kernels/repflow_edge.h"

namespace deepmd::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 8;  // centres per task when intra-op threads are enabled
constexpr const char* kOp = "deepmd_kernels::repflow_edge";

struct CheckedEdge {
  at::Tensor edge, nbr, sw, h2sw, node_ext, p, q, w;
  int64_t m = 0;
  at::Tensor head, tail, self_scale;  // the edge update (undefined without it)
};

// The edge update's inputs (repflow_edge_update; empty or undefined tensors for repflow_edge).
struct Update {
  at::Tensor head, tail, self_scale;
  double alpha = 1;
  bool on() const { return self_scale.defined() && self_scale.numel() > 0; }
};

CheckedEdge Check(const at::Tensor& edge, const at::Tensor& nbr, const at::Tensor& sw, const at::Tensor& h2sw,
                  const at::Tensor& node_ext, const at::Tensor& p, const at::Tensor& q, const at::Tensor& w,
                  int64_t n_msg, int64_t act, const Update& update = {}) {
  TORCH_CHECK(edge.dim() == 3, kOp, ": edge must be [nb, nnei, e_dim], got ", edge.sizes());
  TORCH_CHECK(edge.scalar_type() == at::kFloat || edge.scalar_type() == at::kDouble, kOp,
              ": float32 or float64 only, got ", edge.scalar_type());
  TORCH_CHECK(node_ext.dim() == 2 && p.dim() == 2 && w.dim() == 2, kOp,
              ": node_ext [rows, n_dim], p [rows, F] and w [e_dim, F] must be matrices, got ", node_ext.sizes(), ", ",
              p.sizes(), ", ", w.sizes());
  TORCH_CHECK(IsSupported(act), kOp, ": activation kind ", act, " is not one the kernel implements (0, 1, 7, 8)");
  const int64_t nb = edge.size(0), N = edge.size(1), e = edge.size(2);
  const int64_t rows = node_ext.size(0), nd = node_ext.size(1), f = w.size(1);
  TORCH_CHECK(n_msg >= 0 && n_msg <= f, kOp, ": n_msg=", n_msg, " must lie in [0, F=", f, "]");
  TORCH_CHECK(nbr.sizes() == at::IntArrayRef({nb, N}) && nbr.scalar_type() == at::kLong, kOp,
              ": nbr must be int64 [nb, nnei] = [", nb, ", ", N, "], got ", nbr.scalar_type(), " ", nbr.sizes());
  auto expect = [&](const at::Tensor& t, const char* name, at::IntArrayRef shape) {
    TORCH_CHECK(t.sizes() == shape, kOp, ": ", name, " must have shape ", shape, ", got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == edge.scalar_type(), kOp, ": ", name, " is ", t.scalar_type(), ", edge is ",
                edge.scalar_type());
    TORCH_CHECK(t.device().is_cpu(), kOp, ": CPU tensors only, ", name, " is on ", t.device());
    return t.contiguous();
  };
  CheckedEdge c{expect(edge, "edge", {nb, N, e}),
                nbr.contiguous(),
                expect(sw, "sw", {nb, N}),
                expect(h2sw, "h2sw", {nb, N, 3}),
                expect(node_ext, "node_ext", {rows, nd}),
                expect(p, "p", {rows, f}),
                expect(q, "q", {nb, f}),
                expect(w, "w", {e, f}),
                n_msg};
  if (update.on()) {
    TORCH_CHECK(f - n_msg == e, kOp, "_update: the edge self update's width F - n_msg = ", f - n_msg,
                " must be e_dim = ", e);
    TORCH_CHECK(update.head.dim() == 3 && update.head.size(1) <= N, kOp,
                "_update: head must be [nb, nang <= nnei, e_dim], got ", update.head.sizes());
    c.head = expect(update.head, "head", {nb, update.head.size(1), e});
    c.tail = expect(update.tail, "tail", {e});
    c.self_scale = expect(update.self_scale, "self_scale", {e});
  }
  TORCH_CHECK(c.nbr.device().is_cpu(), kOp, ": CPU tensors only, nbr is on ", c.nbr.device());
  const int64_t* idx = c.nbr.data_ptr<int64_t>();
  for (int64_t i = 0; i < nb * N; ++i) {
    TORCH_CHECK(idx[i] >= -1 && idx[i] < rows, kOp, ": nbr holds row ", idx[i], " but node_ext has ", rows,
                " rows (-1 marks a padded slot)");
  }
  return c;
}

template <typename T>
EdgeInputs<T> Inputs(const CheckedEdge& c, int64_t act, double threshold, double slope, double shift, double e_norm) {
  EdgeInputs<T> in;
  in.nb = c.edge.size(0);
  in.nnei = c.edge.size(1);
  in.e = c.edge.size(2);
  in.n = c.node_ext.size(1);
  in.f = c.w.size(1);
  in.m = c.m;
  in.rows = c.node_ext.size(0);
  in.edge = c.edge.data_ptr<T>();
  in.nbr = c.nbr.data_ptr<int64_t>();
  in.sw = c.sw.data_ptr<T>();
  in.h2sw = c.h2sw.data_ptr<T>();
  in.node_ext = c.node_ext.data_ptr<T>();
  in.p = c.p.data_ptr<T>();
  in.q = c.q.data_ptr<T>();
  in.w = c.w.data_ptr<T>();
  in.inv_norm = static_cast<T>(1.0 / e_norm);
  in.act = Act{static_cast<ActKind>(act), threshold, slope, shift};
  return in;
}

template <typename T>
EdgeInputs<T> Inputs(const CheckedEdge& c, int64_t act, double threshold, double slope, double shift, double e_norm,
                     double alpha) {
  EdgeInputs<T> in = Inputs<T>(c, act, threshold, slope, shift, e_norm);
  if (c.self_scale.defined()) {
    in.self_scale = c.self_scale.data_ptr<T>();
    in.head = c.head.data_ptr<T>();
    in.tail = c.tail.data_ptr<T>();
    in.nang = c.head.size(1);
    in.alpha = static_cast<T>(alpha);
  }
  return in;
}

using EdgeResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

EdgeResult EdgeCpu(const at::Tensor& edge, const at::Tensor& nbr, const at::Tensor& sw, const at::Tensor& h2sw,
                   const at::Tensor& node_ext, const at::Tensor& p, const at::Tensor& q, const at::Tensor& w,
                   int64_t n_msg, int64_t act, double threshold, double slope, double shift, double e_norm,
                   const Update& update) {
  const CheckedEdge c = Check(edge, nbr, sw, h2sw, node_ext, p, q, w, n_msg, act, update);
  const int64_t nb = c.edge.size(0), N = c.edge.size(1), e = c.edge.size(2), nd = c.node_ext.size(1);
  const at::TensorOptions opt = c.edge.options();
  at::Tensor msg = at::empty({nb, n_msg}, opt), eself = at::empty({nb, N, c.w.size(1) - n_msg}, opt);
  at::Tensor hg_edge = at::empty({nb, 3, e}, opt), hg_node = at::empty({nb, 3, nd}, opt);
  AT_DISPATCH_FLOATING_TYPES(c.edge.scalar_type(), "repflow_edge", [&] {
    const EdgeInputs<scalar_t> in = Inputs<scalar_t>(c, act, threshold, slope, shift, e_norm, update.alpha);
    const EdgeOutputs<scalar_t> out{msg.data_ptr<scalar_t>(), eself.data_ptr<scalar_t>(), hg_edge.data_ptr<scalar_t>(),
                                    hg_node.data_ptr<scalar_t>()};
    at::parallel_for(0, in.nb, kGrain, [&](int64_t b0, int64_t b1) { EdgeForward(in, out, b0, b1); });
  });
  return {msg, eself, hg_edge, hg_node};
}

EdgeResult RepflowEdgeCpu(const at::Tensor& edge, const at::Tensor& nbr, const at::Tensor& sw, const at::Tensor& h2sw,
                          const at::Tensor& node_ext, const at::Tensor& p, const at::Tensor& q, const at::Tensor& w,
                          int64_t n_msg, int64_t act, double threshold, double slope, double shift, double e_norm) {
  return EdgeCpu(edge, nbr, sw, h2sw, node_ext, p, q, w, n_msg, act, threshold, slope, shift, e_norm, {});
}

EdgeResult RepflowEdgeUpdateCpu(const at::Tensor& edge, const at::Tensor& nbr, const at::Tensor& sw,
                                const at::Tensor& h2sw, const at::Tensor& node_ext, const at::Tensor& p,
                                const at::Tensor& q, const at::Tensor& w, int64_t n_msg, int64_t act, double threshold,
                                double slope, double shift, double e_norm, const at::Tensor& head,
                                const at::Tensor& tail, const at::Tensor& self_scale, double alpha) {
  TORCH_CHECK(self_scale.numel() > 0, kOp, "_update: self_scale is empty (an edge update needs e_dim > 0)");
  return EdgeCpu(edge, nbr, sw, h2sw, node_ext, p, q, w, n_msg, act, threshold, slope, shift, e_norm,
                 {head, tail, self_scale, alpha});
}

class RepflowEdgeFunction : public torch::autograd::Function<RepflowEdgeFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& edge, const at::Tensor& nbr,
                               const at::Tensor& sw, const at::Tensor& h2sw, const at::Tensor& node_ext,
                               const at::Tensor& p, const at::Tensor& q, const at::Tensor& w, int64_t n_msg,
                               int64_t act, double threshold, double slope, double shift, double e_norm,
                               const at::Tensor& head, const at::Tensor& tail, const at::Tensor& self_scale,
                               double alpha) {
    const bool update = Update{head, tail, self_scale, alpha}.on();
    TORCH_CHECK(!w.requires_grad() && !(update && (tail.requires_grad() || self_scale.requires_grad())), kOp,
                " is an inference kernel: it differentiates the inputs, not the weights; train with the "
                "reference formulation (deepmd.dpkit's default)");
    ctx->save_for_backward({edge, nbr, sw, h2sw, node_ext, p, q, w, head, tail, self_scale});
    ctx->saved_data["n_msg"] = n_msg;
    ctx->saved_data["act"] = act;
    ctx->saved_data["threshold"] = threshold;
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["shift"] = shift;
    ctx->saved_data["e_norm"] = e_norm;
    ctx->saved_data["alpha"] = alpha;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    if (update) {
      static const auto op = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("deepmd_kernels::repflow_edge_update", "")
                                 .typed<decltype(RepflowEdgeUpdateCpu)>();
      auto [msg, edge_new, hg_edge, hg_node] = op.call(edge, nbr, sw, h2sw, node_ext, p, q, w, n_msg, act, threshold,
                                                       slope, shift, e_norm, head, tail, self_scale, alpha);
      return {msg, edge_new, hg_edge, hg_node};
    }
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kOp, "").typed<decltype(RepflowEdgeCpu)>();
    auto [msg, eself, hg_edge, hg_node] =
        op.call(edge, nbr, sw, h2sw, node_ext, p, q, w, n_msg, act, threshold, slope, shift, e_norm);
    return {msg, eself, hg_edge, hg_node};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(), kOp,
                " is differentiable once only (create_graph=True asks for a second derivative); use the reference "
                "formulation (export --reference-layers) for that");
    const variable_list s = ctx->get_saved_variables();
    const int64_t act = ctx->saved_data["act"].toInt();
    const Update update{s[8], s[9], s[10], ctx->saved_data["alpha"].toDouble()};
    const CheckedEdge c =
        Check(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], ctx->saved_data["n_msg"].toInt(), act, update);
    const int64_t nb = c.edge.size(0), N = c.edge.size(1), e = c.edge.size(2), nd = c.node_ext.size(1);
    const at::TensorOptions opt = c.edge.options();
    auto incoming = [&](size_t i, at::IntArrayRef shape) {
      return grads[i].defined() ? grads[i].contiguous() : at::zeros(shape, opt);
    };
    const at::Tensor g_msg = incoming(0, {nb, c.m});
    const at::Tensor g_eself = incoming(1, {nb, N, c.w.size(1) - c.m});
    const at::Tensor g_hg_edge = incoming(2, {nb, 3, e});
    const at::Tensor g_hg_node = incoming(3, {nb, 3, nd});
    at::Tensor g_edge = at::empty_like(c.edge), g_sw = at::empty_like(c.sw), g_h2sw = at::empty_like(c.h2sw);
    at::Tensor g_node = at::zeros_like(c.node_ext), g_p = at::zeros_like(c.p), g_q = at::empty_like(c.q);
    at::Tensor g_head = update.on() ? at::empty_like(c.head) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(c.edge.scalar_type(), "repflow_edge_backward", [&] {
      const EdgeInputs<scalar_t> in =
          Inputs<scalar_t>(c, act, ctx->saved_data["threshold"].toDouble(), ctx->saved_data["slope"].toDouble(),
                           ctx->saved_data["shift"].toDouble(), ctx->saved_data["e_norm"].toDouble(), update.alpha);
      EdgeGradients<scalar_t> g;
      g.g_msg = g_msg.data_ptr<scalar_t>();
      g.g_eself = g_eself.data_ptr<scalar_t>();
      g.g_hg_edge = g_hg_edge.data_ptr<scalar_t>();
      g.g_hg_node = g_hg_node.data_ptr<scalar_t>();
      g.edge = g_edge.data_ptr<scalar_t>();
      g.sw = g_sw.data_ptr<scalar_t>();
      g.h2sw = g_h2sw.data_ptr<scalar_t>();
      g.node_ext = g_node.data_ptr<scalar_t>();
      g.p = g_p.data_ptr<scalar_t>();
      g.q = g_q.data_ptr<scalar_t>();
      g.head = update.on() ? g_head.data_ptr<scalar_t>() : nullptr;
      EdgeBackward(in, g, 0, in.nb);  // one range: neighbours' rows of node_ext and p are shared
    });
    const at::Tensor none;
    return {g_edge, none, g_sw, g_h2sw, g_node, g_p,    g_q,  none, none,
            none,   none, none, none,   none,   g_head, none, none, none};
  }
};

EdgeResult RepflowEdgeAutograd(const at::Tensor& edge, const at::Tensor& nbr, const at::Tensor& sw,
                               const at::Tensor& h2sw, const at::Tensor& node_ext, const at::Tensor& p,
                               const at::Tensor& q, const at::Tensor& w, int64_t n_msg, int64_t act, double threshold,
                               double slope, double shift, double e_norm) {
  const at::Tensor none = at::empty({0}, edge.options());  // no update (undefined tensors cannot be saved)
  variable_list out = RepflowEdgeFunction::apply(edge, nbr, sw, h2sw, node_ext, p, q, w, n_msg, act, threshold, slope,
                                                 shift, e_norm, none, none, none, 1.0);
  return {out[0], out[1], out[2], out[3]};
}

EdgeResult RepflowEdgeUpdateAutograd(const at::Tensor& edge, const at::Tensor& nbr, const at::Tensor& sw,
                                     const at::Tensor& h2sw, const at::Tensor& node_ext, const at::Tensor& p,
                                     const at::Tensor& q, const at::Tensor& w, int64_t n_msg, int64_t act,
                                     double threshold, double slope, double shift, double e_norm,
                                     const at::Tensor& head, const at::Tensor& tail, const at::Tensor& self_scale,
                                     double alpha) {
  TORCH_CHECK(self_scale.numel() > 0, kOp, "_update: self_scale is empty (an edge update needs e_dim > 0)");  // as
  // the CPU kernel, so that the refusal does not depend on which dispatch key runs first
  variable_list out = RepflowEdgeFunction::apply(edge, nbr, sw, h2sw, node_ext, p, q, w, n_msg, act, threshold, slope,
                                                 shift, e_norm, head, tail, self_scale, alpha);
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace
}  // namespace deepmd::kernels

TORCH_LIBRARY_FRAGMENT(deepmd_kernels, m) {
  m.def(
      "repflow_edge(Tensor edge, Tensor nbr, Tensor sw, Tensor h2sw, Tensor node_ext, Tensor p, Tensor q, Tensor w, "
      "int n_msg, int act, float threshold, float slope, float shift, float e_norm) -> (Tensor msg, Tensor eself, "
      "Tensor hg_edge, Tensor hg_node)");
  // The same with the layer's edge update: edge_new = alpha edge + self_scale * eself + (head | tail).
  m.def(
      "repflow_edge_update(Tensor edge, Tensor nbr, Tensor sw, Tensor h2sw, Tensor node_ext, Tensor p, Tensor q, "
      "Tensor w, int n_msg, int act, float threshold, float slope, float shift, float e_norm, Tensor head, "
      "Tensor tail, Tensor self_scale, float alpha) -> (Tensor msg, Tensor edge_new, Tensor hg_edge, Tensor hg_node)");
}

TORCH_LIBRARY_IMPL(deepmd_kernels, CPU, m) {
  m.impl("repflow_edge", deepmd::kernels::RepflowEdgeCpu);
  m.impl("repflow_edge_update", deepmd::kernels::RepflowEdgeUpdateCpu);
}

TORCH_LIBRARY_IMPL(deepmd_kernels, Autograd, m) {
  m.impl("repflow_edge", deepmd::kernels::RepflowEdgeAutograd);
  m.impl("repflow_edge_update", deepmd::kernels::RepflowEdgeUpdateAutograd);
}
