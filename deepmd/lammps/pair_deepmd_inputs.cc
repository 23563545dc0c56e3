// PairDeepMD's interfaces to the rest of LAMMPS: frame and atomic parameters from computes and fixes
// (deepmd-kit's fparam_from_compute, fparam_from_fix, aparam_from_compute), extract() for fix adapt
// and kspace styles, and memory_usage().
#include "deepmd/lammps/pair_deepmd.h"  // first: it includes fmt_compat.h before any LAMMPS header

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "atom.h"
#include "compute.h"
#include "error.h"
#include "fix.h"
#include "force.h"
#include "modify.h"
#include "update.h"

namespace LAMMPS_NS {
namespace {

using LammpsCompute = Compute;  // in PairDeepMD's members, Compute names its method

template <typename T>
double CapacityBytes(const std::vector<T>& v) {
  return static_cast<double>(v.capacity() * sizeof(T));
}

}  // namespace

void PairDeepMD::BindParameterSources() {
  const auto& m = metadata();
  const char* style = force->pair_style;
  fparam_compute_ = nullptr, fparam_fix_ = nullptr, aparam_compute_ = nullptr;
  // The model's width for each source (deepmd-kit: one parameter from a scalar, several from a vector).
  auto no_parameters = [&](const char* keyword, const std::string& id, const char* what) {
    error->all(FLERR, absl::StrFormat("pair_style %s: %s %s: the model takes no %s parameters; remove %s", style,
                                      keyword, id, what, keyword));
  };
  if (const std::string& id = options_.fparam_compute; !id.empty()) {
    const int icompute = modify->find_compute(id);
    if (icompute < 0) {
      error->all(FLERR, absl::StrFormat("pair_style %s: fparam_from_compute %s: there is no compute with ID '%s'; "
                                        "define it (e.g. compute %s all temp)",
                                        style, id, id, id));
    }
    LammpsCompute* c = modify->compute[icompute];
    if (m.dim_fparam == 0) no_parameters("fparam_from_compute", id, "frame");
    if (m.dim_fparam == 1 && !c->scalar_flag) {
      error->all(FLERR, absl::StrFormat("pair_style %s: fparam_from_compute %s: the model takes 1 frame parameter, "
                                        "read from the compute's global scalar, which compute %s (%s) does not have",
                                        style, id, id, c->style));
    }
    if (m.dim_fparam > 1 && (!c->vector_flag || (!c->size_vector_variable && c->size_vector < m.dim_fparam))) {
      error->all(FLERR,
                 absl::StrFormat("pair_style %s: fparam_from_compute %s: the model takes %d frame parameters, read "
                                 "from the first %d values of the compute's global vector, which compute %s (%s) %s",
                                 style, id, m.dim_fparam, m.dim_fparam, id, c->style,
                                 c->vector_flag ? absl::StrFormat("has only %d", c->size_vector) : "does not have"));
    }
    fparam_compute_ = c;
  }
  if (const std::string& id = options_.fparam_fix; !id.empty()) {
    const int ifix = modify->find_fix(id);
    if (ifix < 0) {
      error->all(FLERR,
                 absl::StrFormat("pair_style %s: fparam_from_fix %s: there is no fix with ID '%s'", style, id, id));
    }
    Fix* f = modify->fix[ifix];
    if (m.dim_fparam == 0) no_parameters("fparam_from_fix", id, "frame");
    const int first = options_.fparam_fix_index;
    if (first < 0 && !f->scalar_flag) {
      error->all(FLERR, absl::StrFormat("pair_style %s: fparam_from_fix %s: fix %s (%s) has no global scalar; name "
                                        "the first element of its global vector (fparam_from_fix %s 1)",
                                        style, id, id, f->style, id));
    }
    if (first >= 0 && (!f->vector_flag || (!f->size_vector_variable && first + m.dim_fparam > f->size_vector))) {
      error->all(FLERR,
                 absl::StrFormat("pair_style %s: fparam_from_fix %s %d: the model takes %d frame parameter(s), "
                                 "elements %d-%d of the fix's global vector, which fix %s (%s) %s",
                                 style, id, first + 1, m.dim_fparam, first + 1, first + m.dim_fparam, id, f->style,
                                 f->vector_flag ? absl::StrFormat("has only %d", f->size_vector) : "does not have"));
    }
    fparam_fix_ = f;
  }
  if (const std::string& id = options_.aparam_compute; !id.empty()) {
    const int icompute = modify->find_compute(id);
    if (icompute < 0) {
      error->all(FLERR, absl::StrFormat("pair_style %s: aparam_from_compute %s: there is no compute with ID '%s'; "
                                        "define it (e.g. compute %s all ke/atom)",
                                        style, id, id, id));
    }
    LammpsCompute* c = modify->compute[icompute];
    if (m.dim_aparam == 0) no_parameters("aparam_from_compute", id, "atomic");
    const int cols = c->size_peratom_cols;
    if (!c->peratom_flag || (m.dim_aparam == 1 && cols != 0) || (m.dim_aparam > 1 && cols < m.dim_aparam)) {
      error->all(FLERR,
                 absl::StrFormat("pair_style %s: aparam_from_compute %s: the model takes %d atomic "
                                 "parameter(s) per atom, read from a per-atom %s, but compute %s (%s) has %s",
                                 style, id, m.dim_aparam,
                                 m.dim_aparam == 1 ? "vector" : absl::StrFormat("array of >= %d columns", m.dim_aparam),
                                 id, c->style,
                                 !c->peratom_flag ? "no per-atom values"
                                 : cols == 0      ? "a per-atom vector"
                                                  : absl::StrFormat("a per-atom array of %d columns", cols)));
    }
    aparam_compute_ = c;
  }
}

void PairDeepMD::UpdateParameters() {
  const auto& m = metadata();
  const bigint step = update->ntimestep;
  // LAMMPS's convention: a compute invoked on this step (flag set since the last clearstep) is current;
  // otherwise invoke it and say so. At setup the computes' own setup() (degrees of freedom of
  // temperature computes) comes after the forces, so it is done here first.
  auto invoke = [&](LammpsCompute* c, int flag, const bigint& invoked_on, auto&& call) {
    if (update->setupflag) c->setup();
    if (!(c->invoked_flag & flag) || invoked_on != step) {
      call();
      c->invoked_flag |= flag;
    }
    modify->addstep_compute(step + 1);
  };
  if (LammpsCompute* c = fparam_compute_) {
    fparam_.resize(m.dim_fparam);
    if (m.dim_fparam == 1) {
      invoke(c, LammpsCompute::INVOKED_SCALAR, c->invoked_scalar, [c] { c->compute_scalar(); });
      fparam_[0] = c->scalar;
    } else {
      invoke(c, LammpsCompute::INVOKED_VECTOR, c->invoked_vector, [c] { c->compute_vector(); });
      if (c->size_vector < m.dim_fparam) {  // variable-length vectors are sized when invoked
        error->all(FLERR, absl::StrFormat("pair_style %s: fparam_from_compute %s: the model takes %d frame "
                                          "parameters, but the compute's vector has %d values on step %d",
                                          force->pair_style, c->id, m.dim_fparam, c->size_vector, step));
      }
      std::copy(c->vector, c->vector + m.dim_fparam, fparam_.begin());
    }
    input_.fparam = fparam_;
  } else if (Fix* f = fparam_fix_) {
    if (step % f->global_freq != 0) {
      error->all(FLERR, absl::StrFormat("pair_style %s: fparam_from_fix %s: the fix's values are current every %d "
                                        "steps, not on step %d; use a fix whose values are current every step",
                                        force->pair_style, f->id, f->global_freq, step));
    }
    fparam_.resize(m.dim_fparam);
    const int first = options_.fparam_fix_index;
    if (first < 0) {
      std::fill(fparam_.begin(), fparam_.end(), f->compute_scalar());  // every parameter, as deepmd-kit
    } else {
      if (first + m.dim_fparam > f->size_vector) {
        error->all(FLERR, absl::StrFormat("pair_style %s: fparam_from_fix %s %d: the fix's vector has %d values on "
                                          "step %d, the model needs elements %d-%d",
                                          force->pair_style, f->id, first + 1, f->size_vector, step, first + 1,
                                          first + m.dim_fparam));
      }
      for (int k = 0; k < m.dim_fparam; ++k) fparam_[k] = f->compute_vector(first + k);
    }
    input_.fparam = fparam_;
  }
  if (LammpsCompute* c = aparam_compute_) {
    invoke(c, LammpsCompute::INVOKED_PERATOM, c->invoked_peratom, [c] { c->compute_peratom(); });
    const int nlocal = atom->nlocal, dim = m.dim_aparam;
    aparam_.resize(static_cast<size_t>(nlocal) * dim);
    if (nlocal > 0 && (dim == 1 ? c->vector_atom == nullptr : c->array_atom == nullptr)) {
      error->one(FLERR, absl::StrFormat("aparam_from_compute %s: the compute returned no per-atom values", c->id));
    }
    for (int i = 0; i < nlocal; ++i) {
      for (int k = 0; k < dim; ++k)
        aparam_[static_cast<size_t>(i) * dim + k] = dim == 1 ? c->vector_atom[i] : c->array_atom[i][k];
    }
    input_.aparam = aparam_;
  }
}

void* PairDeepMD::extract(const char* name, int& dim) {
  if (strcmp(name, "scale") == 0) {
    dim = 2;
    return static_cast<void*>(scale_);
  }
  if (strcmp(name, "cut_coul") == 0) {
    dim = 0;
    return static_cast<void*>(&cut_coul_);
  }
  return nullptr;
}

double PairDeepMD::memory_usage() {
  double bytes = Pair::memory_usage();  // per-atom energy and virial arrays
  if (allocated) bytes += (atom->ntypes + 1.0) * (atom->ntypes + 1.0) * (sizeof(int) + 2 * sizeof(double));
  if (models_) {
    for (size_t k = 0; k < models_->size(); ++k) bytes += static_cast<double>(models_->model(k).memory_bytes());
  }
  bytes += CapacityBytes(model_type_) + CapacityBytes(atype_) + CapacityBytes(ids_) + CapacityBytes(plan_) +
           CapacityBytes(aparam_) + CapacityBytes(fparam_);
  for (const auto& out : outputs_) {
    bytes += CapacityBytes(out.force) + CapacityBytes(out.force_mag) + CapacityBytes(out.atom_energy) +
             CapacityBytes(out.atom_virial);
  }
  for (const auto& f : folded_forces_) bytes += CapacityBytes(f);
  return bytes;
}

}  // namespace LAMMPS_NS
