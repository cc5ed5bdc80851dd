// A paged K/V cache whose pages live in a CUDA device's memory (issue 5, CUDA): the BlockPool
// keeps the accounts on the host (sequences, block tables, reference counts, the prefix cache;
// created with options.host_storage = false, so it holds no K/V), and a CudaKvCache of the same
// options holds every layer's K and V pages on the device. Per step the caller asks the pool
// where the new rows go (prepare_write gives their slots, making shared pages exclusive), hands
// the pool's copy-on-write copies to the cache (apply), writes the rows from device tensors
// (write), and runs paged_decode_attention on cuda over k_pages / v_pages with a CudaPageTable
// of the pool's page_table. This is vLLM's split between its block manager and its cache engine.
// Part of quarry::cuda; no CUDA header included.
//
//   BlockPoolOptions o;  o.num_layers = L;  o.n_kv_heads = H;  o.head_dim = D;  o.dtype = DType::f16;
//   o.num_pages = P;  o.host_storage = false;
//   BlockPool pool = BlockPool::create(o).value();
//   CudaKvCache cache = CudaKvCache::create(o).value();
//   pool.append(seq, 1);                                            // room for the new token
//   auto slots = pool.prepare_write(seq, pos, 1).value();
//   cache.apply(pool.take_page_copies());
//   for (layer ...) cache.write(layer, slots, k, v);               // k, v: [tokens, H, D] f32 on the device
//   auto table = CudaPageTable::upload(pool.page_table(batch).value().csr(), P, o.page_size).value();
//   paged_decode_attention(q, cache.k_pages<f16>(layer), cache.v_pages<f16>(layer), table, out);
//
// Element types: f32, f16, bf16 (stored with quarry's round-to-nearest-even conversions), i8 and
// i4 (quantized on the device per token and head, or per group of int4_group elements, by the
// host store's rules: see the top of quarry/kv/block_pool.hpp), so the pages and scales equal a
// host BlockPool's given the same rows; k_pages_int8 / k_pages_int4 give the INT8 / INT4 pages
// as the device attention takes them. Calls run on the legacy default stream of the cache's
// device and return when queued (write's slots are copied to the device first). Errors throw
// quarry::error: invalid_argument / out_of_range for bad arguments (named), device_error for
// CUDA's.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "quarry/core/cuda_tensor.hpp"
#include "quarry/core/float16.hpp"
#include "quarry/core/status.hpp"
#include "quarry/kv/block_pool.hpp"
#include "quarry/kv/cuda_paged_attention.hpp"

namespace quarry {

/// The device pages of a BlockPool's layers; see the top of this header.
class CudaKvCache {
 public:
  /// Pages for `options` (its num_pages must be set: a pool's options() after create have it)
  /// on `device` (-1: the current one), zeroed. Errors: sizes < 1, for i4 an odd head_dim or an
  /// int4_group not dividing it, out_of_memory, device_error.
  static result<CudaKvCache> create(const BlockPoolOptions& options, int device = -1);

  CudaKvCache(CudaKvCache&&) noexcept = default;
  CudaKvCache& operator=(CudaKvCache&&) noexcept = default;

  const BlockPoolOptions& options() const noexcept { return opts_; }  ///< the pool's options
  int device() const noexcept { return device_; }                     ///< the device holding the pages

  /// Copies page src to page dst in every layer's K and V, in order (BlockPool::take_page_copies).
  /// Throws out_of_range for a page number outside [0, num_pages).
  void apply(std::span<const BlockPool::PageCopy> copies);
  /// Writes rows of layer `layer`: token t of k and v ([slots.size(), n_kv_heads, head_dim], f32
  /// on the cache's device) to slot slots[t] (BlockPool::prepare_write). Throws for a layer or
  /// slot out of range, or shapes or devices that differ.
  void write(std::int64_t layer, std::span<const std::int64_t> slots, const Tensor<float, cuda>& k, const Tensor<float, cuda>& v);

  /// Layer `layer`'s K (V) pages [num_pages, n_kv_heads, page_size, head_dim] of T, the pool's
  /// dtype (throws otherwise), as paged_decode_attention on cuda takes them.
  ///@{
  template <class T>
  const Tensor<T, cuda>& k_pages(std::int64_t layer) const {
    return stored<T>(layer, 0, "k_pages");
  }
  template <class T>
  const Tensor<T, cuda>& v_pages(std::int64_t layer) const {
    return stored<T>(layer, 1, "v_pages");
  }
  ///@}
  /// Layer `layer`'s INT8 (INT4) K or V pages with their scales (the pool's dtype must be i8
  /// (i4); throws otherwise), as paged_decode_attention on cuda takes them.
  ///@{
  CudaInt8KvPages k_pages_int8(std::int64_t layer) const { return {stored<std::int8_t>(layer, 0, "k_pages_int8"), scales_[scale_index(layer, 0)]}; }
  CudaInt8KvPages v_pages_int8(std::int64_t layer) const { return {stored<std::int8_t>(layer, 1, "v_pages_int8"), scales_[scale_index(layer, 1)]}; }
  CudaInt4KvPages k_pages_int4(std::int64_t layer) const { return {stored<int4>(layer, 0, "k_pages_int4"), scales_[scale_index(layer, 0)]}; }
  CudaInt4KvPages v_pages_int4(std::int64_t layer) const { return {stored<int4>(layer, 1, "v_pages_int4"), scales_[scale_index(layer, 1)]}; }
  ///@}

 private:
  CudaKvCache() = default;
  void check_layer(std::int64_t layer, const char* what) const;
  // Tensor 2 * layer + kv of type T, which must be the pool's dtype.
  template <class T>
  const Tensor<T, cuda>& stored(std::int64_t layer, int kv, const char* what) const {
    check_layer(layer, what);
    if (dtype_of<T> != opts_.dtype)
      throw_error(errc::invalid_argument, fmt::format("CudaKvCache holds {} pages, not {}", dtype_name(opts_.dtype), dtype_name(dtype_of<T>)));
    const auto i = static_cast<std::size_t>(2 * layer + kv);
    if constexpr (std::is_same_v<T, float>) return f32_[i];
    else if constexpr (std::is_same_v<T, f16>) return f16_[i];
    else if constexpr (std::is_same_v<T, bf16>) return bf16_[i];
    else if constexpr (std::is_same_v<T, std::int8_t>) return i8_[i];
    else return i4_[i];
  }
  // The scales of tensor 2 * layer + kv (after stored() checked the layer).
  static std::size_t scale_index(std::int64_t layer, int kv) noexcept { return static_cast<std::size_t>(2 * layer + kv); }
  void* page_data(std::size_t i) const noexcept;  // tensor i's device pointer, whatever its type

  BlockPoolOptions opts_;
  int device_ = -1;
  std::size_t page_bytes_ = 0;  // one page of one layer's K (or V)
  std::vector<Tensor<float, cuda>> f32_;  // [2 * layer + kv], the one of the pool's dtype
  std::vector<Tensor<f16, cuda>> f16_;
  std::vector<Tensor<bf16, cuda>> bf16_;
  std::vector<Tensor<std::int8_t, cuda>> i8_;
  std::vector<Tensor<int4, cuda>> i4_;
  std::vector<Tensor<float, cuda>> scales_;  // i8 / i4: [num_pages, n_kv_heads, page_size(, groups)]
  std::size_t scale_page_bytes_ = 0;         // one page of one layer's K (or V) scales
  std::int64_t groups_ = 1;                  // i4: scales per token and head
  detail::DeviceBuffer slots_;  // write's slots on the device, grown as needed
};

}  // namespace quarry
