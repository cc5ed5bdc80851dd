// Paged decode attention on the device (quarry/kv/cuda_paged_attention.hpp): checks, the page
// table's upload, the workspace, and the kernels of paged_attention_kernels.cu.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cuda_error.hpp"
#include "paged_attention_kernels.h"
#include "quarry/kv/cuda_paged_attention.hpp"

namespace quarry {

result<CudaPageTable> CudaPageTable::upload(const PageTableCsr& table, std::int64_t num_pages, std::int64_t page_size, int device) {
  if (page_size < 1) return status(errc::invalid_argument, fmt::format("page size {}; it must be >= 1", page_size));
  QUARRY_RETURN_IF_ERROR(check_page_table(table, num_pages, page_size));
  CudaPageTable t;
  t.batch_ = table.batch();
  t.num_pages_ = num_pages;
  t.page_size_ = page_size;
  for (std::int64_t b = 0; b < t.batch_; ++b) {
    const std::int64_t len = table.length(b, page_size);
    if (len == 0) return status(errc::invalid_argument, fmt::format("sequence {} of the batch has no tokens; decode attention needs at least one", b));
    t.max_length_ = std::max(t.max_length_, len);
  }
  try {
    const detail::ScopedDevice on(device);
    if (on.error() != cudaSuccess) return detail::cuda_failure(on.error(), fmt::format("cudaSetDevice({})", device));
    auto up = [](std::span<const std::int32_t> s) {
      std::vector<std::int32_t> copy(s.begin(), s.end());
      if (copy.empty()) copy.push_back(0);  // a device tensor of one element stands for an empty span
      return Tensor<std::int32_t, cuda>::from_host(TensorView<const std::int32_t>(copy.data(), Shape{static_cast<std::int64_t>(copy.size())}));
    };
    t.indptr_ = up(table.indptr);
    t.indices_ = up(table.indices);
    t.last_page_len_ = up(table.last_page_len);
  } catch (const error& e) {
    return status(e.code(), e.what());
  }
  return t;
}

namespace {

// One of K or V as the kernels see it.
struct Pages {
  const void* values = nullptr;
  const float* scales = nullptr;
  Shape shape;
  int device = 0;
  cuda_kernels::KvType type = cuda_kernels::KvType::f16;
  std::int64_t groups = 1;
  std::string_view dtype;
};

template <class KV>
Pages pages_of(const Tensor<KV, cuda>& t) {
  Pages p{t.data(), nullptr, t.shape(), t.device(), cuda_kernels::KvType::bf16, 1, dtype_name(dtype_of<KV>)};
  if constexpr (std::is_same_v<KV, float>) p.type = cuda_kernels::KvType::f32;
  else if constexpr (std::is_same_v<KV, f16>) p.type = cuda_kernels::KvType::f16;
  return p;
}

[[noreturn]] void fail(const status& st, std::string_view context) { detail::throw_in_context(st, context); }

void decode(const Tensor<float, cuda>& q, const Pages& k, const Pages& v, const CudaPageTable& table, Tensor<float, cuda>& out,
            const DecodeAttentionParams& params, const CudaAttentionOptions& options) {
  const std::string context = fmt::format("paged_decode_attention on cuda (q {}, k_pages {} {}, out {})", q.shape(), k.shape, k.dtype, out.shape());
  if (const status st = check_decode_attention_shapes(q.shape(), k.shape, v.shape, out.shape(), table.batch()); !st.ok()) fail(st, context);
  const std::int64_t head_dim = k.shape[3], page_size = k.shape[2];
  if (head_dim != 64 && head_dim != 128 && head_dim != 256)
    fail({errc::unsupported, fmt::format("head_dim {}; the CUDA kernel takes 64, 128 or 256", head_dim)}, context);
  if (q.shape()[1] / k.shape[1] > 8)
    fail({errc::unsupported, fmt::format("{} query heads per kv head; the CUDA kernel takes at most 8", q.shape()[1] / k.shape[1])}, context);
  if (k.type == cuda_kernels::KvType::i4 && (head_dim / k.groups) % 8 != 0)
    fail({errc::unsupported, fmt::format("INT4 groups of {} elements; the CUDA kernel takes multiples of 8", head_dim / k.groups)}, context);
  if (table.page_size() != page_size || table.num_pages() != k.shape[0])
    fail({errc::invalid_argument, fmt::format("the page table was checked for {} pages of {} tokens but k_pages has {} of {}", table.num_pages(),
                                              table.page_size(), k.shape[0], page_size)},
         context);
  if (params.sliding_window < 0) fail({errc::invalid_argument, fmt::format("sliding_window is {}", params.sliding_window)}, context);
  if (params.chunk_tokens < 0) fail({errc::invalid_argument, fmt::format("chunk_tokens is {}", params.chunk_tokens)}, context);
  if (table.batch() == 0) return;
  const int device = out.device();
  if (q.device() != device || k.device != device || v.device != device || table.device() != device)
    fail({errc::invalid_argument, fmt::format("q, k_pages, v_pages, the page table and out must be on one device (out is on {})", device)}, context);
  const detail::ScopedDevice on(device);
  if (on.error() != cudaSuccess) fail(detail::cuda_failure(on.error(), "cudaSetDevice"), context);

  cuda_kernels::PagedDecodeArgs a;
  a.q = q.data();
  a.k = k.values;
  a.v = v.values;
  a.kv_type = k.type;
  a.k_scales = k.scales;
  a.v_scales = v.scales;
  a.groups = k.groups;
  a.indptr = table.indptr().data();
  a.indices = table.indices().data();
  a.last_page_len = table.last_page_len().data();
  a.batch = table.batch();
  a.n_heads = q.shape()[1];
  a.n_kv_heads = k.shape[1];
  a.page_size = page_size;
  a.head_dim = head_dim;
  a.scale = params.scale != 0.f ? params.scale : 1.f / std::sqrt(static_cast<float>(head_dim));
  a.sliding_window = params.sliding_window;
  // Chunks: as asked, else 256 tokens, halved while the grid would leave SMs idle, down to 32
  // tokens or the kernel's tile (64 tokens at head_dim 128 with f16 pages): a shorter chunk than
  // the tile leaves warps of every block idle and only adds partial results to merge.
  std::int64_t chunk = params.chunk_tokens > 0 ? params.chunk_tokens : 256;
  if (params.chunk_tokens == 0) {
    int sms = 132;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) (void)cudaGetLastError();
    const std::int64_t floor = std::max<std::int64_t>(32, cuda_kernels::paged_decode_tile_tokens(head_dim, a.n_heads / a.n_kv_heads, a.kv_type));
    while (chunk > floor && a.batch * a.n_kv_heads * ((table.max_length() + chunk - 1) / chunk) < 4 * static_cast<std::int64_t>(sms)) chunk /= 2;
  }
  a.chunk = chunk;
  a.chunks = (table.max_length() + chunk - 1) / chunk;
  if (a.chunks > 65535)
    fail({errc::unsupported, fmt::format("{} chunks of {} tokens; at most 65535 (raise chunk_tokens)", a.chunks, chunk)}, context);
  a.out = out.data();
  const std::size_t ws = cuda_kernels::paged_decode_workspace_floats(a);
  void* partial = nullptr;
  if (ws > 0) {
    if (const cudaError_t e = cudaMallocAsync(&partial, ws * sizeof(float), nullptr); e != cudaSuccess)
      fail(detail::cuda_failure(e, fmt::format("cudaMallocAsync of {} bytes of workspace", ws * sizeof(float))), context);
    a.partial = static_cast<float*>(partial);
  }
  const cudaError_t launch = cuda_kernels::launch_paged_decode(a);
  if (partial != nullptr) (void)cudaFreeAsync(partial, nullptr);
  if (launch != cudaSuccess) fail(detail::cuda_failure(launch, "kernel launch"), context);
  if (options.wait)
    if (const cudaError_t e = cudaStreamSynchronize(nullptr); e != cudaSuccess) fail(detail::cuda_failure(e, "kernel run"), context);
}

}  // namespace

void paged_decode_attention(const Tensor<float, cuda>& q, const Tensor<f16, cuda>& k_pages, const Tensor<f16, cuda>& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params,
                            const CudaAttentionOptions& options) {
  decode(q, pages_of(k_pages), pages_of(v_pages), table, out, params, options);
}
void paged_decode_attention(const Tensor<float, cuda>& q, const Tensor<bf16, cuda>& k_pages, const Tensor<bf16, cuda>& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params,
                            const CudaAttentionOptions& options) {
  decode(q, pages_of(k_pages), pages_of(v_pages), table, out, params, options);
}
void paged_decode_attention(const Tensor<float, cuda>& q, const Tensor<float, cuda>& k_pages, const Tensor<float, cuda>& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params,
                            const CudaAttentionOptions& options) {
  decode(q, pages_of(k_pages), pages_of(v_pages), table, out, params, options);
}

namespace {

// The scales' shapes are checked by the CPU functions' checks (shapes only: device memory is not read).
Int8KvPages shapes_of(const CudaInt8KvPages& p) {
  return {TensorView<const std::int8_t>(nullptr, p.values.shape()), TensorView<const float>(nullptr, p.scales.shape())};
}
Int4KvPages shapes_of(const CudaInt4KvPages& p) {
  return {TensorView<const int4>(nullptr, p.values.shape()), TensorView<const float>(nullptr, p.scales.shape())};
}

status check_pages(const CudaInt8KvPages& k, const CudaInt8KvPages& v) { return check_int8_pages(shapes_of(k), shapes_of(v)); }
status check_pages(const CudaInt4KvPages& k, const CudaInt4KvPages& v) { return check_int4_pages(shapes_of(k), shapes_of(v)); }

// INT8 or INT4 pages: their checks, then the one decode.
template <class CudaPages>
void decode_quantized(const Tensor<float, cuda>& q, const CudaPages& k_pages, const CudaPages& v_pages, const CudaPageTable& table,
                      Tensor<float, cuda>& out, const DecodeAttentionParams& params, const CudaAttentionOptions& options) {
  constexpr bool kInt8 = std::is_same_v<CudaPages, CudaInt8KvPages>;
  const std::string_view dtype = kInt8 ? "int8" : "int4";
  if (const status st = check_pages(k_pages, v_pages); !st.ok()) fail(st, fmt::format("paged_decode_attention on cuda ({} pages)", dtype));
  const Shape& ss = k_pages.scales.shape();
  const std::int64_t groups = !kInt8 && ss.rank() == 4 ? ss[3] : 1;
  auto pages = [&](const CudaPages& p, std::string_view which) {
    if (p.scales.device() != p.values.device())
      fail({errc::invalid_argument, fmt::format("{} scales are on device {} but their values on {}", which, p.scales.device(), p.values.device())},
           "paged_decode_attention on cuda");
    return Pages{p.values.data(), p.scales.data(), p.values.shape(), p.values.device(), kInt8 ? cuda_kernels::KvType::i8 : cuda_kernels::KvType::i4,
                 groups, dtype};
  };
  decode(q, pages(k_pages, "K"), pages(v_pages, "V"), table, out, params, options);
}

}  // namespace

void paged_decode_attention(const Tensor<float, cuda>& q, const CudaInt8KvPages& k_pages, const CudaInt8KvPages& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params,
                            const CudaAttentionOptions& options) {
  decode_quantized(q, k_pages, v_pages, table, out, params, options);
}

void paged_decode_attention(const Tensor<float, cuda>& q, const CudaInt4KvPages& k_pages, const CudaInt4KvPages& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params,
                            const CudaAttentionOptions& options) {
  decode_quantized(q, k_pages, v_pages, table, out, params, options);
}

}  // namespace quarry
