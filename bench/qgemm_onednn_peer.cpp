// oneDNN's int8 matmul as bench_qgemv's peer. The Debian package's oneDNN runs on OpenMP, which
// takes its thread count from the calling thread's omp_set_num_threads (OMP_NUM_THREADS is read
// once, when libgomp loads, too early to set from here). A primitive is tuned for the thread count
// current when it is created, so each instance sets it both before creating and before running.
#include "qgemm_onednn_peer.hpp"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <vector>

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <fmt/format.h>

namespace quarry::bench {

namespace {

const char* isa_name(dnnl::cpu_isa isa) {
  using dnnl::cpu_isa;
  switch (isa) {
    case cpu_isa::sse41: return "sse41";
    case cpu_isa::avx: return "avx";
    case cpu_isa::avx2: return "avx2";
    case cpu_isa::avx2_vnni: return "avx2_vnni";
    case cpu_isa::avx512_mic: return "avx512_mic";
    case cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case cpu_isa::avx512_core: return "avx512_core";
    case cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

}  // namespace

struct OnednnInt8Matmul::Impl {
  int threads = 1;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::vector<std::int8_t> xq;  // the activations, quantized once
  std::vector<float> y;
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul matmul;
  std::unordered_map<int, dnnl::memory> args;
};

OnednnInt8Matmul::OnednnInt8Matmul(const float* x, const std::int8_t* w, const float* w_scales, long m, long n,
                                   long k, unsigned threads)
    : impl_(std::make_unique<Impl>()) {
  using dnnl::memory;
  using dt = memory::data_type;
  using tag = memory::format_tag;
  Impl& d = *impl_;
  d.threads = static_cast<int>(std::max(1u, threads));
  omp_set_num_threads(d.threads);

  // One scale for the whole activation tensor: a per-row activation scale (quarry's) would be an
  // [M, N] output-scale mask in oneDNN 2.x, off its fast path. Per tensor is how oneDNN's int8
  // matmul is ordinarily fed.
  const auto mk = static_cast<std::size_t>(m * k);
  float amax = 0;
  for (std::size_t i = 0; i < mk; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float x_scale = amax > 0 ? amax / 127.f : 1.f;
  d.xq.resize(mk);
  for (std::size_t i = 0; i < mk; ++i)
    d.xq[i] = static_cast<std::int8_t>(std::clamp(std::nearbyint(x[i] / x_scale), -127.f, 127.f));
  d.y.resize(static_cast<std::size_t>(m * n));

  std::vector<float> out_scales(static_cast<std::size_t>(n));
  for (long c = 0; c < n; ++c) out_scales[static_cast<std::size_t>(c)] = x_scale * w_scales[c];
  dnnl::primitive_attr attr;
  attr.set_output_scales(1 << 1, out_scales);  // per output column n

  const memory::desc src_md({m, k}, dt::s8, tag::ab);
  const memory::desc any_w_md({k, n}, dt::s8, tag::any);  // oneDNN picks its blocked layout
  const memory::desc dst_md({m, n}, dt::f32, tag::ab);
  d.pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, any_w_md, dst_md), attr, d.engine);
  d.matmul = dnnl::matmul(d.pd);

  // quarry's [N, K] row-major weights are the [K, N] matrix in "ba" order; reorder once into
  // oneDNN's layout.
  memory user_w({{k, n}, dt::s8, tag::ba}, d.engine, const_cast<std::int8_t*>(w));
  memory packed_w(d.pd.weights_desc(), d.engine);
  dnnl::reorder(user_w, packed_w).execute(d.stream, user_w, packed_w);
  d.stream.wait();

  d.args = {{DNNL_ARG_SRC, memory(src_md, d.engine, d.xq.data())},
            {DNNL_ARG_WEIGHTS, packed_w},
            {DNNL_ARG_DST, memory(dst_md, d.engine, d.y.data())}};
}

OnednnInt8Matmul::~OnednnInt8Matmul() = default;

void OnednnInt8Matmul::run() {
  omp_set_num_threads(impl_->threads);  // the caller's thread may have been set otherwise since
  impl_->matmul.execute(impl_->stream, impl_->args);
  impl_->stream.wait();
}

const float* OnednnInt8Matmul::output() const noexcept { return impl_->y.data(); }

std::string OnednnInt8Matmul::build() const {
  const dnnl::version_t* v = dnnl::version();
  return fmt::format("oneDNN {}.{}.{} omp {} {} s8s8f32", v->major, v->minor, v->patch,
                     isa_name(dnnl::get_effective_cpu_isa()), impl_->pd.impl_info_str());
}

}  // namespace quarry::bench
