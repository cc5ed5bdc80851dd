// CudaKvCache (quarry/kv/cuda_kv_cache.hpp): checks, the device pages, page copies, and the
// row-write kernel of kv_cache_kernels.cu.
#include <algorithm>
#include <string>

#include <fmt/format.h>

#include "cuda_error.hpp"
#include "kv_cache_kernels.h"
#include "quarry/kv/cuda_kv_cache.hpp"

namespace quarry {

result<CudaKvCache> CudaKvCache::create(const BlockPoolOptions& options, int device) {
  const BlockPoolOptions& o = options;
  if (o.dtype != DType::f32 && o.dtype != DType::f16 && o.dtype != DType::bf16 && o.dtype != DType::i8 && o.dtype != DType::i4)
    return status(errc::unsupported, fmt::format("CudaKvCache: {} pages (f32, f16, bf16, i8 and i4 are supported)", dtype_name(o.dtype)));
  if (o.dtype == DType::i4 && (o.head_dim % 2 != 0 || o.int4_group < 1 || o.head_dim % o.int4_group != 0))
    return status(errc::invalid_argument, fmt::format("CudaKvCache: i4 pages need an even head_dim ({}) and an int4_group ({}) dividing it",
                                                      o.head_dim, o.int4_group));
  if (o.num_layers < 1 || o.n_kv_heads < 1 || o.head_dim < 1 || o.page_size < 1 || o.num_pages < 1)
    return status(errc::invalid_argument, fmt::format("CudaKvCache: num_layers {}, n_kv_heads {}, head_dim {}, page_size {} and num_pages {} must "
                                                      "all be >= 1 (give the pool's options() after BlockPool::create)",
                                                      o.num_layers, o.n_kv_heads, o.head_dim, o.page_size, o.num_pages));
  CudaKvCache c;
  c.opts_ = o;
  c.groups_ = o.dtype == DType::i4 ? o.head_dim / o.int4_group : 1;
  const Shape shape{o.num_pages, o.n_kv_heads, o.page_size, o.head_dim};
  const Shape scale_shape = o.dtype == DType::i4 ? Shape{o.num_pages, o.n_kv_heads, o.page_size, c.groups_} : Shape{o.num_pages, o.n_kv_heads, o.page_size};
  try {
    const detail::ScopedDevice on(device);
    if (on.error() != cudaSuccess) return detail::cuda_failure(on.error(), fmt::format("cudaSetDevice({})", device));
    int current = 0;
    if (const cudaError_t e = cudaGetDevice(&current); e != cudaSuccess) return detail::cuda_failure(e, "cudaGetDevice");
    c.device_ = current;
    for (std::int64_t i = 0; i < 2 * o.num_layers; ++i) {
      if (o.dtype == DType::f32) c.f32_.emplace_back(shape);  // Tensor(shape): zeroed
      else if (o.dtype == DType::f16) c.f16_.emplace_back(shape);
      else if (o.dtype == DType::bf16) c.bf16_.emplace_back(shape);
      else if (o.dtype == DType::i8) c.i8_.emplace_back(shape);
      else c.i4_.emplace_back(shape);
      if (o.dtype == DType::i8 || o.dtype == DType::i4) c.scales_.emplace_back(scale_shape);
    }
  } catch (const error& e) {
    return status(e.code(), e.what());
  }
  const auto elements = static_cast<std::size_t>(o.n_kv_heads * o.page_size * o.head_dim);
  c.page_bytes_ = o.dtype == DType::f32 ? 4 * elements : o.dtype == DType::i8 ? elements : o.dtype == DType::i4 ? elements / 2 : 2 * elements;
  if (!c.scales_.empty()) c.scale_page_bytes_ = static_cast<std::size_t>(o.n_kv_heads * o.page_size * c.groups_) * sizeof(float);
  return c;
}

void CudaKvCache::check_layer(std::int64_t layer, const char* what) const {
  if (layer < 0 || layer >= opts_.num_layers)
    throw_error(errc::out_of_range, fmt::format("CudaKvCache::{}: layer {} of {}", what, layer, opts_.num_layers));
}

void* CudaKvCache::page_data(std::size_t i) const noexcept {
  if (opts_.dtype == DType::f32) return const_cast<float*>(f32_[i].data());
  if (opts_.dtype == DType::f16) return const_cast<f16*>(f16_[i].data());
  if (opts_.dtype == DType::bf16) return const_cast<bf16*>(bf16_[i].data());
  if (opts_.dtype == DType::i8) return const_cast<std::int8_t*>(i8_[i].data());
  return const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>(i4_[i].data()));
}

void CudaKvCache::apply(std::span<const BlockPool::PageCopy> copies) {
  for (const BlockPool::PageCopy& c : copies)
    if (c.src < 0 || c.src >= opts_.num_pages || c.dst < 0 || c.dst >= opts_.num_pages)
      throw_error(errc::out_of_range, fmt::format("CudaKvCache::apply: a copy of page {} to page {}; the pages are 0..{}", c.src, c.dst,
                                                  opts_.num_pages - 1));
  if (copies.empty()) return;
  const detail::ScopedDevice on(device_);
  if (on.error() != cudaSuccess) detail::throw_in_context(detail::cuda_failure(on.error(), "cudaSetDevice"), "CudaKvCache::apply");
  auto copy = [](const void* base, std::size_t bytes, const BlockPool::PageCopy& c) {
    auto* b = static_cast<char*>(const_cast<void*>(base));
    const cudaError_t e = cudaMemcpyAsync(b + static_cast<std::size_t>(c.dst) * bytes, b + static_cast<std::size_t>(c.src) * bytes, bytes,
                                          cudaMemcpyDeviceToDevice, nullptr);
    if (e != cudaSuccess)
      detail::throw_in_context(detail::cuda_failure(e, fmt::format("cudaMemcpyAsync of page {} to page {}", c.src, c.dst)), "CudaKvCache::apply");
  };
  for (const BlockPool::PageCopy& c : copies)
    for (std::size_t i = 0; i < static_cast<std::size_t>(2 * opts_.num_layers); ++i) {
      copy(page_data(i), page_bytes_, c);
      if (!scales_.empty()) copy(scales_[i].data(), scale_page_bytes_, c);  // the scales travel with the values
    }
}

void CudaKvCache::write(std::int64_t layer, std::span<const std::int64_t> slots, const Tensor<float, cuda>& k, const Tensor<float, cuda>& v) {
  check_layer(layer, "write");
  const auto tokens = static_cast<std::int64_t>(slots.size());
  const Shape want{tokens, opts_.n_kv_heads, opts_.head_dim};
  const std::string context = fmt::format("CudaKvCache::write (layer {}, {} slots, k {}, v {})", layer, tokens, k.shape(), v.shape());
  if (k.shape() != want || v.shape() != want)
    throw_error(errc::shape_mismatch, fmt::format("{}: k and v must be [tokens, n_kv_heads, head_dim] = {}", context, want));
  if (tokens == 0) return;
  if (k.device() != device_ || v.device() != device_)
    throw_error(errc::invalid_argument, fmt::format("{}: k and v are on devices {} and {}; the cache is on {}", context, k.device(), v.device(), device_));
  const std::int64_t rows = opts_.num_pages * opts_.page_size;
  for (const std::int64_t s : slots)
    if (s < 0 || s >= rows) throw_error(errc::out_of_range, fmt::format("{}: slot {}; the slots are 0..{} (BlockPool::prepare_write)", context, s, rows - 1));
  const std::size_t bytes = slots.size() * sizeof(std::int64_t);
  if (slots_.size() < bytes) {
    auto grown = detail::DeviceBuffer::allocate(std::max<std::size_t>(bytes, 4096), device_);
    if (!grown.ok()) detail::throw_in_context(grown.status(), context);
    slots_ = std::move(*grown);
  }
  if (const status st = detail::cuda_copy_host_to_device(slots_.data(), slots.data(), bytes, device_); !st.ok()) detail::throw_in_context(st, context);
  const detail::ScopedDevice on(device_);
  if (on.error() != cudaSuccess) detail::throw_in_context(detail::cuda_failure(on.error(), "cudaSetDevice"), context);
  const auto ki = static_cast<std::size_t>(2 * layer), vi = ki + 1;
  const auto* dslots = static_cast<const std::int64_t*>(slots_.data());
  cudaError_t e = cudaSuccess;
  if (opts_.dtype == DType::i8 || opts_.dtype == DType::i4) {
    e = cuda_kernels::launch_kv_write_quantized(page_data(ki), const_cast<float*>(scales_[ki].data()), page_data(vi), const_cast<float*>(scales_[vi].data()),
                                                opts_.dtype == DType::i4, dslots, k.data(), v.data(), tokens, opts_.n_kv_heads, opts_.page_size,
                                                opts_.head_dim, opts_.dtype == DType::i4 ? opts_.int4_group : opts_.head_dim);
  } else {
    const auto type = opts_.dtype == DType::f32   ? cuda_kernels::KvStoreType::f32
                      : opts_.dtype == DType::f16 ? cuda_kernels::KvStoreType::f16
                                                  : cuda_kernels::KvStoreType::bf16;
    e = cuda_kernels::launch_kv_write(page_data(ki), page_data(vi), type, dslots, k.data(), v.data(), tokens, opts_.n_kv_heads, opts_.page_size,
                                      opts_.head_dim);
  }
  if (e != cudaSuccess) detail::throw_in_context(detail::cuda_failure(e, "kernel launch"), context);
}

}  // namespace quarry
