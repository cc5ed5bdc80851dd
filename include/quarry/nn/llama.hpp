// A Llama-architecture decoder built only from quarry's modules (issue 6): weights read from GGUF
// as f32 tensors or QuantizedTensors (INT8 per channel, INT4 in groups, or as the file stores
// them), projections through Eigen (f32) or qgemm / qgemv (quantized), K/V in the paged cache
// (BlockPool, any of its element types), attention from the kv module (prefill for many new
// tokens, decode for one), RMSNorm, RoPE on adjacent pairs, SwiGLU, tied or separate output
// weights. The configuration comes from the file's `llama.*` metadata.
//
// One forward() call feeds a batch of sequences their new tokens (a prompt, a prompt's uncached
// rest, or one token each while decoding), appends their K/V to the pool, and returns the logits
// of each sequence's last new token. Sequences are the pool's: create, fork and release them
// there (a prefix shared through the pool's cache or a fork is not computed again).
//
// Thread safety: a LlamaModel is immutable after load(); forward() calls may run concurrently
// only on different pools (the pool is not locked).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/io/gguf.hpp"
#include "quarry/kv/block_pool.hpp"
#include "quarry/quant/quantized_panels.hpp"
#include "quarry/quant/quantized_tensor.hpp"

namespace quarry {

/// The shape of a Llama model, from GGUF metadata.
struct LlamaConfig {
  std::int64_t dim = 0;             ///< llama.embedding_length
  std::int64_t n_layers = 0;        ///< llama.block_count
  std::int64_t n_heads = 0;         ///< llama.attention.head_count
  std::int64_t n_kv_heads = 0;      ///< llama.attention.head_count_kv (default n_heads)
  std::int64_t head_dim = 0;        ///< dim / n_heads
  std::int64_t ffn_dim = 0;         ///< llama.feed_forward_length
  std::int64_t vocab_size = 0;      ///< rows of token_embd.weight
  std::int64_t context_length = 0;  ///< llama.context_length
  std::int64_t rope_dim = 0;        ///< llama.rope.dimension_count (default head_dim)
  float rope_base = 10000.f;        ///< llama.rope.freq_base
  float rms_eps = 1e-5f;            ///< llama.attention.layer_norm_rms_epsilon

  /// Reads and checks the metadata: general.architecture "llama", sizes positive and
  /// consistent (dim a multiple of n_heads, n_heads of n_kv_heads, rope_dim even and <= head_dim).
  /// Errors name the key.
  static result<LlamaConfig> from_gguf(const GgufFile& file);
};

/// How the weight matrices are held.
enum class LlamaWeights : std::uint8_t {
  f32,     ///< f32 (f16/bf16/Q8_0/Q4_0 files widened)
  int8,    ///< INT8 per channel, symmetric (W8A8 products)
  int4,    ///< INT4 in groups of `int4_group` along K, symmetric, f16 scales, multiplied as W4A8
           ///< (activations in int8 per row); a matrix whose K is not a multiple of the group
           ///< falls back to INT8 per channel (listed in summary())
  stored,  ///< as the file stores them: Q8_0 / Q4_0 as QuantizedTensors, f32/f16/bf16 as f32
};

/// "f32", "int8", "int4", "stored"; parse_llama_weights reads them back.
std::string_view llama_weights_name(LlamaWeights w) noexcept;
/// The LlamaWeights named "f32", "int8", "int4" or "stored"; nullopt for any other name.
std::optional<LlamaWeights> parse_llama_weights(std::string_view name) noexcept;

/// Options of LlamaModel::load.
struct LlamaLoadOptions {
  /// How the weights are held after loading (f32, quantized to INT8 or INT4, or as stored).
  LlamaWeights weights = LlamaWeights::f32;
  int int4_group = 32;         ///< 32, 64 or 128
  ThreadPool* pool = nullptr;  ///< quantizes on this pool when set
  /// Hold a layer's Q, K, V weights (and its gate, up weights) as one matrix when they are
  /// quantized alike, so each is one product per token. The outputs are the same either way.
  bool stack_projections = true;
  /// Hold quantized matrices (`int4`, `int8`, and Q8_0 / Q4_0 tensors `stored`) as
  /// QuantizedPanels, the layout of the CPU's fastest quantized kernels (see
  /// quarry/quant/quantized_panels.hpp); false keeps the row-major QuantizedTensor. The weights
  /// are the same; INT8 per-channel products are bit-identical either way, per-group ones
  /// (INT4, Q8_0, Q4_0) round differently.
  bool panels = true;
};

/// One projection y = x W^T with W [out, in] in f32 or quantized.
class Linear {
 public:
  Linear() = default;
  /// An f32 layer owning `w` [out, in].
  explicit Linear(Tensor<float> w) : f32_(std::move(w)) {}
  /// A quantized layer.
  explicit Linear(QuantizedTensor<cpu> w) : q_(std::move(w)) {}
  /// A quantized layer in panels (W4A8 or W8A8 products).
  explicit Linear(QuantizedPanels w) : p_(std::move(w)) {}

  /// Outputs of the projection: W's rows.
  std::int64_t out_features() const noexcept { return q_ ? q_->rows() : p_ ? p_->rows() : f32_.dim(0); }
  /// Inputs of the projection: W's columns.
  std::int64_t in_features() const noexcept { return q_ ? q_->cols() : p_ ? p_->cols() : f32_.dim(1); }
  /// Bytes the weights take (values, scales, zero points; panels' padding rows included).
  std::int64_t bytes() const noexcept {
    return q_ ? static_cast<std::int64_t>(q_->nbytes()) : p_ ? static_cast<std::int64_t>(p_->nbytes()) : f32_.nbytes();
  }
  /// "f32" or the scheme ("int8 per_channel symmetric f32-scales", ...), "... in panels" for
  /// QuantizedPanels.
  std::string format() const;
  /// True when W is quantized (a QuantizedTensor or QuantizedPanels).
  bool quantized() const noexcept { return q_.has_value() || p_.has_value(); }
  /// W as held, when a QuantizedTensor; else null.
  const QuantizedTensor<cpu>* quantized_weights() const noexcept { return q_ ? &*q_ : nullptr; }
  /// W as held, when in panels; else null.
  const QuantizedPanels* panels() const noexcept { return p_ ? &*p_ : nullptr; }
  /// The memory W occupies, one span per buffer (f32 values; or quantized values, scales and,
  /// when asymmetric, zero points), bytes() in all: for a host that pins or pre-reads the
  /// weights, and for benchmarks that measure how fast this memory reads.
  std::vector<std::span<const std::byte>> buffers() const;

  /// y [M, out] = x [M, in] W^T (contiguous rows); output rows split over `pool` when set.
  void apply(TensorView<const float> x, TensorView<float> y, ThreadPool* pool) const;

 private:
  Tensor<float> f32_;
  std::optional<QuantizedTensor<cpu>> q_;
  std::optional<QuantizedPanels> p_;
};

namespace detail {
/// Projections of one input whose outputs are used apart (a layer's Q, K, V; gate, up): the
/// parts' rows stacked in one Linear when their weights are quantized alike (one product per
/// token, so one trip to the thread pool and one weight stream), else one Linear per part. The
/// outputs are exactly the parts' own (a quantized product's rows do not depend on each other);
/// f32 weights are not stacked, so the f32 model's arithmetic is untouched.
struct LinearStack {
  std::vector<Linear> linears;  ///< one (stacked) or one per part, in order
};
}  // namespace detail

/// A Llama decoder.
class LlamaModel {
 public:
  /// Reads the configuration and weights of `file` (which must outlive nothing: weights are
  /// copied or converted). Errors: the configuration's, a missing tensor or one of the wrong
  /// shape (named), an unsupported tensor type (named), quantization errors.
  static result<LlamaModel> load(const GgufFile& file, const LlamaLoadOptions& options = {});

  /// The model's configuration as read from the GGUF file.
  const LlamaConfig& config() const noexcept { return config_; }
  /// Bytes of all weights as held.
  std::int64_t weight_bytes() const noexcept;
  /// One line per distinct weight format: how many matrices and bytes each.
  std::string summary() const;
  /// Calls f once per projection: each layer's stacked or separate Q, K, V and gate, up, then
  /// its output and down projections; last the output head. Their bytes() are what a decode step
  /// streams from memory.
  void for_each_projection(FunctionRef<void(const Linear&)> f) const;

  /// Options of a BlockPool shaped for this model (layers, kv heads, head dim) with K/V of
  /// `dtype` and `num_pages` pages of `page_size` tokens; max_sequence_length = context_length;
  /// INT4 groups of 32 elements (or of the largest power of two dividing a smaller head_dim).
  BlockPoolOptions kv_options(DType dtype, std::int64_t num_pages, std::int64_t page_size = 16) const;

  /// Feeds tokens[b] (at least one) to sequence seqs[b] of `kv`: their K/V are appended after
  /// the sequence's current length, and logits [batch, vocab_size] receive the scores of the
  /// next token after each sequence's last new token. Errors (the pool unchanged when any is
  /// found before compute starts): sizes that disagree, a token id out of range, an unknown
  /// sequence, a pool not shaped for this model (kv_options), out_of_memory, a sequence beyond
  /// the context length.
  status forward(BlockPool& kv, std::span<const SequenceId> seqs, std::span<const std::span<const std::int32_t>> tokens,
                 TensorView<float> logits, ThreadPool* pool = nullptr) const;

  /// Sees each layer's queries after RoPE, [new tokens, n_heads, head_dim] (rows in batch
  /// order), just before attention: for tests and analysis of real activations.
  using QueryObserver = FunctionRef<void(std::int64_t layer, TensorView<const float> q)>;
  /// forward(), calling `observe` once per layer.
  status forward(BlockPool& kv, std::span<const SequenceId> seqs, std::span<const std::span<const std::int32_t>> tokens,
                 TensorView<float> logits, ThreadPool* pool, QueryObserver observe) const;

 private:
  status run(BlockPool& kv, std::span<const SequenceId> seqs, std::span<const std::span<const std::int32_t>> tokens,
             TensorView<float> logits, ThreadPool* pool, const QueryObserver* observe) const;

  struct Layer {
    Tensor<float> attn_norm, ffn_norm;
    detail::LinearStack qkv, gate_up;
    Linear wo, down;
  };
  LlamaConfig config_;
  Tensor<float> token_embd_;  // [vocab, dim]
  Tensor<float> output_norm_;
  Linear output_;
  std::vector<Layer> layers_;
  std::int64_t stacked_width_ = 0;  // the widest stacked product's outputs (0: none stacked)
};

}  // namespace quarry
