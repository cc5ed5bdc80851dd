#include "quarry/nn/llama.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <map>

#include <Eigen/Core>
#include <fmt/format.h>

#include "quarry/kv/paged_attention.hpp"
#include "quarry/kv/prefill_attention.hpp"
#include "quarry/nn/ops.hpp"
#include "quarry/quant/qgemm.hpp"
#include "quarry/quant/quantize.hpp"

namespace quarry {

std::string_view llama_weights_name(LlamaWeights w) noexcept {
  switch (w) {
    case LlamaWeights::f32: return "f32";
    case LlamaWeights::int8: return "int8";
    case LlamaWeights::int4: return "int4";
    case LlamaWeights::stored: return "stored";
  }
  return "unknown";
}

std::optional<LlamaWeights> parse_llama_weights(std::string_view name) noexcept {
  for (LlamaWeights w : {LlamaWeights::f32, LlamaWeights::int8, LlamaWeights::int4, LlamaWeights::stored})
    if (llama_weights_name(w) == name) return w;
  return std::nullopt;
}

// ---- configuration ----

namespace {

result<std::int64_t> positive_int(const GgufFile& f, std::string_view key, std::int64_t max = std::int64_t{1} << 24) {
  QUARRY_ASSIGN_OR_RETURN(const std::int64_t v, f.get_int(key));
  if (v < 1 || v > max) return status{errc::invalid_argument, fmt::format("{} is {}; it must be 1..{}", key, v, max)};
  return v;
}

}  // namespace

result<LlamaConfig> LlamaConfig::from_gguf(const GgufFile& f) {
  QUARRY_ASSIGN_OR_RETURN(const std::string arch, f.get_string("general.architecture"));
  if (arch != "llama")
    return status{errc::unsupported, fmt::format("general.architecture is \"{}\"; this decoder reads \"llama\" models", arch)};
  LlamaConfig c;
  QUARRY_ASSIGN_OR_RETURN(c.dim, positive_int(f, "llama.embedding_length"));
  QUARRY_ASSIGN_OR_RETURN(c.n_layers, positive_int(f, "llama.block_count", 4096));
  QUARRY_ASSIGN_OR_RETURN(c.n_heads, positive_int(f, "llama.attention.head_count", 4096));
  c.n_kv_heads = c.n_heads;
  if (f.find("llama.attention.head_count_kv")) {
    QUARRY_ASSIGN_OR_RETURN(c.n_kv_heads, positive_int(f, "llama.attention.head_count_kv", 4096));
  }
  QUARRY_ASSIGN_OR_RETURN(c.ffn_dim, positive_int(f, "llama.feed_forward_length"));
  QUARRY_ASSIGN_OR_RETURN(c.context_length, positive_int(f, "llama.context_length", std::int64_t{1} << 24));
  if (c.dim % c.n_heads != 0)
    return status{errc::invalid_argument,
                  fmt::format("llama.embedding_length {} is not a multiple of llama.attention.head_count {}", c.dim, c.n_heads)};
  if (c.n_heads % c.n_kv_heads != 0)
    return status{errc::invalid_argument, fmt::format("llama.attention.head_count {} is not a multiple of llama.attention.head_count_kv {}",
                                                      c.n_heads, c.n_kv_heads)};
  c.head_dim = c.dim / c.n_heads;
  c.rope_dim = c.head_dim;
  if (f.find("llama.rope.dimension_count")) {
    QUARRY_ASSIGN_OR_RETURN(c.rope_dim, positive_int(f, "llama.rope.dimension_count", c.head_dim));
  }
  if (c.rope_dim % 2 != 0 || c.head_dim % 2 != 0)
    return status{errc::invalid_argument,
                  fmt::format("llama.rope.dimension_count {} and the head dimension {} must be even", c.rope_dim, c.head_dim)};
  if (f.find("llama.rope.freq_base")) {
    QUARRY_ASSIGN_OR_RETURN(const double base, f.get_float("llama.rope.freq_base"));
    if (!(base > 1.0) || !std::isfinite(base))
      return status{errc::invalid_argument, fmt::format("llama.rope.freq_base is {}; it must be a finite number > 1", base)};
    c.rope_base = static_cast<float>(base);
  }
  if (f.find("llama.attention.layer_norm_rms_epsilon")) {
    QUARRY_ASSIGN_OR_RETURN(const double eps, f.get_float("llama.attention.layer_norm_rms_epsilon"));
    if (!(eps > 0.0) || !(eps < 1.0))
      return status{errc::invalid_argument, fmt::format("llama.attention.layer_norm_rms_epsilon is {}; it must be in (0, 1)", eps)};
    c.rms_eps = static_cast<float>(eps);
  }
  const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
  if (embd == nullptr) return status{errc::not_found, "tensor token_embd.weight is missing"};
  if (embd->shape.rank() != 2 || embd->shape[1] != c.dim)
    return status{errc::shape_mismatch, fmt::format("token_embd.weight is {}; it must be [vocab, {}]", embd->shape, c.dim)};
  c.vocab_size = embd->shape[0];
  return c;
}

// ---- Linear ----

std::string Linear::format() const {
  if (p_) return p_->scheme().to_string() + " in panels";
  return q_ ? q_->scheme().to_string() : std::string("f32");
}

std::vector<std::span<const std::byte>> Linear::buffers() const {
  auto bytes = [](const void* p, std::size_t n) { return std::span<const std::byte>(static_cast<const std::byte*>(p), n); };
  if (p_) return p_->buffers();
  if (!q_) return {bytes(f32_.data(), f32_.nbytes())};
  const std::size_t values = static_cast<std::size_t>(q_->value_bytes().numel()), zeros = static_cast<std::size_t>(q_->zeros().numel());
  std::vector<std::span<const std::byte>> out{bytes(q_->value_bytes().data(), values), bytes(q_->scales_data(), q_->nbytes() - values - zeros)};
  if (zeros > 0) out.push_back(bytes(q_->zeros().data(), zeros));
  return out;
}

void Linear::apply(TensorView<const float> x, TensorView<float> y, ThreadPool* pool) const {
  // Small products run on the caller's thread: waking the pool costs more than they do.
  const bool big = out_features() * in_features() * x.dim(0) >= (std::int64_t{1} << 18);
  // Quantized weights, in panels or row-major: one row is a qgemv (the decode step), more a qgemm.
  QGemmOptions o;
  o.pool = big ? pool : nullptr;
  auto product = [&](const auto& w) {
    if (x.dim(0) == 1)
      qgemv(std::span<const float>(x.data(), static_cast<std::size_t>(x.dim(1))), w,
            std::span<float>(y.data(), static_cast<std::size_t>(y.dim(1))), o);
    else
      qgemm(x, w, y, o);
  };
  if (p_) return product(*p_);  // W4A8 or W8A8 on panels
  if (q_) {
    // INT4 weights: activations quantized to int8 per row (W4A8), the path that streams the
    // weights at memory speed (W4A32 converts every nibble to float).
    if (q_->scheme().bits == 4) o.activations = ActivationMode::int8;
    return product(*q_);
  }
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::int64_t m = x.dim(0), k = x.dim(1), n = f32_.dim(0);
  const Eigen::Map<const RowMajor> xm(x.data(), m, k), wm(f32_.data(), n, k);
  Eigen::Map<RowMajor> ym(y.data(), m, n);
  auto columns = [&](std::int64_t lo, std::int64_t hi) {
    ym.middleCols(lo, hi - lo).noalias() = xm * wm.middleRows(lo, hi - lo).transpose();
  };
  if (pool != nullptr && pool->size() > 1 && big) {
    const std::int64_t block = 64;
    pool->parallel_for(0, (n + block - 1) / block, [&](std::int64_t lo, std::int64_t hi) {
      columns(lo * block, std::min(n, hi * block));
    });
  } else {
    columns(0, n);
  }
}

namespace {

// ys[i] [rows, part i's outputs] = x W_i^T for the parts of `s`; a stacked product goes through
// `scratch` ([rows, >= the outputs' sum]) and is copied out part by part.
void apply_stack(const detail::LinearStack& s, TensorView<const float> x, std::initializer_list<Tensor<float>*> ys, Tensor<float>& scratch,
                 ThreadPool* pool) {
  if (s.linears.size() == ys.size()) {
    std::size_t i = 0;
    for (Tensor<float>* y : ys) s.linears[i++].apply(x, y->view(), pool);
    return;
  }
  const std::int64_t rows = x.dim(0), total = s.linears.front().out_features();
  s.linears.front().apply(x, TensorView<float>(scratch.data(), Shape{rows, total}), pool);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* src = scratch.data() + r * total;
    for (Tensor<float>* y : ys) {
      const std::int64_t n = y->dim(1);
      std::copy_n(src, n, y->data() + r * n);
      src += n;
    }
  }
}

}  // namespace

// ---- loading ----

namespace {

result<Tensor<float>> load_vector(const GgufFile& f, const std::string& name, std::int64_t size) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (t == nullptr) return status{errc::not_found, fmt::format("tensor {} is missing", name)};
  if (t->shape != Shape{size}) return status{errc::shape_mismatch, fmt::format("tensor {} is {}; it must be [{}]", name, t->shape, size)};
  return f.tensor_dequantized_f32(name);
}

struct LinearLoader {
  const GgufFile& file;
  const LlamaLoadOptions& options;

  result<Linear> operator()(const std::string& name, std::int64_t out, std::int64_t in) const {
    const GgufTensorInfo* t = file.find_tensor(name);
    if (t == nullptr) return status{errc::not_found, fmt::format("tensor {} is missing", name)};
    if (t->shape != Shape{out, in})
      return status{errc::shape_mismatch, fmt::format("tensor {} is {}; it must be [{}, {}]", name, t->shape, out, in)};
    if (options.weights == LlamaWeights::stored && (t->type == GgmlType::q8_0 || t->type == GgmlType::q4_0)) {
      QUARRY_ASSIGN_OR_RETURN(QuantizedTensor<cpu> q, file.tensor_quantized(name));
      return Linear(std::move(q));
    }
    QUARRY_ASSIGN_OR_RETURN(Tensor<float> w, file.tensor_dequantized_f32(name));
    if (options.weights == LlamaWeights::f32 || options.weights == LlamaWeights::stored) return Linear(std::move(w));
    QuantScheme scheme = QuantScheme::int8_per_channel();
    if (options.weights == LlamaWeights::int4 && in % options.int4_group == 0)
      scheme = QuantScheme::int4_grouped(options.int4_group, true, DType::f16);
    auto q = quantize(w.view(), scheme, options.pool);
    if (!q.ok()) return status{q.status().code(), fmt::format("{}: {}", name, q.status().message())};
    return Linear(std::move(*q));
  }
};

// The rows of `parts` (quantized alike, per row or per group) in one tensor, in order; nullopt
// when they are not all quantized the same way.
std::optional<QuantizedTensor<cpu>> stack_rows(const std::vector<Linear>& parts) {
  const QuantizedTensor<cpu>* first = parts.front().quantized_weights();
  if (first == nullptr || first->scheme().granularity == Granularity::per_tensor) return std::nullopt;
  std::int64_t rows = 0;
  for (const Linear& l : parts) {
    const QuantizedTensor<cpu>* q = l.quantized_weights();
    if (q == nullptr || !(q->scheme() == first->scheme()) || q->cols() != first->cols()) return std::nullopt;
    rows += q->rows();
  }
  auto stacked = QuantizedTensor<cpu>::create(first->scheme(), rows, first->cols());
  if (!stacked.ok()) return std::nullopt;
  // Values, scales and zero points are each one row-major array: a part's rows are one block.
  auto* values = stacked->value_bytes().data();
  auto* scales = static_cast<std::uint8_t*>(stacked->scales_data());
  auto* zeros = stacked->zeros().data();
  for (const Linear& l : parts) {
    const QuantizedTensor<cpu>& q = *l.quantized_weights();
    const auto value_bytes = static_cast<std::size_t>(q.value_bytes().numel());
    std::memcpy(values, q.value_bytes().data(), value_bytes);
    values += value_bytes;
    const std::size_t zero_bytes = static_cast<std::size_t>(q.zeros().numel());
    const std::size_t scale_bytes = q.nbytes() - value_bytes - zero_bytes;
    std::memcpy(scales, q.scales_data(), scale_bytes);
    scales += scale_bytes;
    if (zero_bytes > 0) {
      std::memcpy(zeros, q.zeros().data(), zero_bytes);
      zeros += zero_bytes;
    }
  }
  return std::move(*stacked);
}

// l in panels when it holds quantized weights that panels take (INT4 per_group, INT8 per channel
// or per group) and the options ask for panels; else l.
result<Linear> in_panels(Linear l, const LlamaLoadOptions& options) {
  const QuantizedTensor<cpu>* q = l.quantized_weights();
  if (!options.panels || q == nullptr || !QuantizedPanels::supports(q->scheme())) return l;
  QUARRY_ASSIGN_OR_RETURN(QuantizedPanels p, QuantizedPanels::pack(*q, options.pool));
  return Linear(std::move(p));
}

// Loads the parts (name, outputs) of a stack of projections with `in` inputs.
result<detail::LinearStack> load_stack(const LinearLoader& linear, const std::vector<std::pair<std::string, std::int64_t>>& parts,
                                       std::int64_t in) {
  detail::LinearStack s;
  for (const auto& [name, out] : parts) {
    QUARRY_ASSIGN_OR_RETURN(Linear l, linear(name, out, in));
    s.linears.push_back(std::move(l));
  }
  if (linear.options.stack_projections) {
    if (std::optional<QuantizedTensor<cpu>> stacked = stack_rows(s.linears)) {
      s.linears.clear();
      s.linears.push_back(Linear(std::move(*stacked)));
    }
  }
  for (Linear& l : s.linears) {
    QUARRY_ASSIGN_OR_RETURN(l, in_panels(std::move(l), linear.options));
  }
  return s;
}

}  // namespace

result<LlamaModel> LlamaModel::load(const GgufFile& file, const LlamaLoadOptions& options) {
  if (options.int4_group != 32 && options.int4_group != 64 && options.int4_group != 128)
    return status{errc::invalid_argument, fmt::format("int4_group is {}; it must be 32, 64 or 128", options.int4_group)};
  LlamaModel m;
  QUARRY_ASSIGN_OR_RETURN(m.config_, LlamaConfig::from_gguf(file));
  const LlamaConfig& c = m.config_;
  QUARRY_ASSIGN_OR_RETURN(m.token_embd_, file.tensor_dequantized_f32("token_embd.weight"));
  QUARRY_ASSIGN_OR_RETURN(m.output_norm_, load_vector(file, "output_norm.weight", c.dim));
  const LinearLoader linear{file, options};
  // Tied output weights: no output.weight, the embedding is used.
  QUARRY_ASSIGN_OR_RETURN(m.output_, linear(file.find_tensor("output.weight") ? "output.weight" : "token_embd.weight", c.vocab_size, c.dim));
  QUARRY_ASSIGN_OR_RETURN(m.output_, in_panels(std::move(m.output_), options));
  const std::int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  m.layers_.resize(static_cast<std::size_t>(c.n_layers));
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    Layer& layer = m.layers_[static_cast<std::size_t>(l)];
    const std::string p = fmt::format("blk.{}.", l);
    QUARRY_ASSIGN_OR_RETURN(layer.attn_norm, load_vector(file, p + "attn_norm.weight", c.dim));
    QUARRY_ASSIGN_OR_RETURN(layer.ffn_norm, load_vector(file, p + "ffn_norm.weight", c.dim));
    QUARRY_ASSIGN_OR_RETURN(layer.qkv,
                            load_stack(linear, {{p + "attn_q.weight", q_dim}, {p + "attn_k.weight", kv_dim}, {p + "attn_v.weight", kv_dim}}, c.dim));
    QUARRY_ASSIGN_OR_RETURN(layer.wo, linear(p + "attn_output.weight", c.dim, q_dim));
    QUARRY_ASSIGN_OR_RETURN(layer.wo, in_panels(std::move(layer.wo), options));
    QUARRY_ASSIGN_OR_RETURN(layer.gate_up, load_stack(linear, {{p + "ffn_gate.weight", c.ffn_dim}, {p + "ffn_up.weight", c.ffn_dim}}, c.dim));
    QUARRY_ASSIGN_OR_RETURN(layer.down, linear(p + "ffn_down.weight", c.dim, c.ffn_dim));
    QUARRY_ASSIGN_OR_RETURN(layer.down, in_panels(std::move(layer.down), options));
    for (const detail::LinearStack* st : {&layer.qkv, &layer.gate_up})
      if (st->linears.size() == 1) m.stacked_width_ = std::max(m.stacked_width_, st->linears.front().out_features());
  }
  return m;
}

namespace {

// Calls f(projection) for every matrix a layer holds: its stacks' parts (or stacked matrices),
// wo and down.
template <class Layer, class F>
void for_each_linear(const Layer& l, F&& f) {
  for (const detail::LinearStack* st : {&l.qkv, &l.gate_up})
    for (const Linear& p : st->linears) f(p);
  f(l.wo);
  f(l.down);
}

}  // namespace

std::int64_t LlamaModel::weight_bytes() const noexcept {
  std::int64_t total = token_embd_.nbytes() + output_norm_.nbytes() + output_.bytes();
  for (const Layer& l : layers_) {
    total += l.attn_norm.nbytes() + l.ffn_norm.nbytes();
    for_each_linear(l, [&](const Linear& p) { total += p.bytes(); });
  }
  return total;
}

void LlamaModel::for_each_projection(FunctionRef<void(const Linear&)> f) const {
  for (const Layer& l : layers_) for_each_linear(l, f);
  f(output_);
}

std::string LlamaModel::summary() const {
  std::map<std::string, std::pair<int, std::int64_t>> by_format;
  auto add = [&](const Linear& l) {
    auto& e = by_format[l.format()];
    ++e.first;
    e.second += l.bytes();
  };
  add(output_);
  for (const Layer& l : layers_) for_each_linear(l, add);
  std::string s;
  for (const auto& [format, e] : by_format) s += fmt::format("{} matrices {}: {:.2f} MB\n", e.first, format, static_cast<double>(e.second) / 1e6);
  return s;
}

BlockPoolOptions LlamaModel::kv_options(DType dtype, std::int64_t num_pages, std::int64_t page_size) const {
  BlockPoolOptions o;
  o.num_layers = config_.n_layers;
  o.n_kv_heads = config_.n_kv_heads;
  o.head_dim = config_.head_dim;
  o.page_size = page_size;
  o.dtype = dtype;
  o.num_pages = num_pages;
  o.max_sequence_length = config_.context_length;
  // INT4 K/V: groups of 32 elements, or the largest power of two dividing a smaller head.
  o.int4_group = 32;
  while (o.int4_group > 2 && config_.head_dim % o.int4_group != 0) o.int4_group /= 2;
  return o;
}

// ---- forward ----

namespace {

// Calls f(k_pages, v_pages) with layer l's pages in the pool's element type.
template <class F>
status with_pages(const BlockPool& kv, std::int64_t layer, F&& f) {
  switch (kv.options().dtype) {
    case DType::f32: return f(kv.k_pages<float>(layer), kv.v_pages<float>(layer));
    case DType::f16: return f(kv.k_pages<f16>(layer), kv.v_pages<f16>(layer));
    case DType::bf16: return f(kv.k_pages<bf16>(layer), kv.v_pages<bf16>(layer));
    case DType::i8: return f(kv.k_pages_int8(layer), kv.v_pages_int8(layer));
    case DType::i4: return f(kv.k_pages_int4(layer), kv.v_pages_int4(layer));
    default: break;
  }
  return {errc::unsupported, fmt::format("the pool's K/V type {} is not supported by the decoder", dtype_name(kv.options().dtype))};
}

}  // namespace

status LlamaModel::forward(BlockPool& kv, std::span<const SequenceId> seqs, std::span<const std::span<const std::int32_t>> tokens,
                           TensorView<float> logits, ThreadPool* pool) const {
  return run(kv, seqs, tokens, logits, pool, nullptr);
}

status LlamaModel::forward(BlockPool& kv, std::span<const SequenceId> seqs, std::span<const std::span<const std::int32_t>> tokens,
                           TensorView<float> logits, ThreadPool* pool, QueryObserver observe) const {
  return run(kv, seqs, tokens, logits, pool, &observe);
}

status LlamaModel::run(BlockPool& kv, std::span<const SequenceId> seqs, std::span<const std::span<const std::int32_t>> tokens,
                       TensorView<float> logits, ThreadPool* pool, const QueryObserver* observe) const {
  const LlamaConfig& c = config_;
  const std::int64_t batch = static_cast<std::int64_t>(seqs.size());
  if (static_cast<std::int64_t>(tokens.size()) != batch)
    return {errc::shape_mismatch, fmt::format("{} sequences but {} token lists", batch, tokens.size())};
  if (batch == 0) return {errc::invalid_argument, "forward needs at least one sequence"};
  if (logits.shape() != Shape{batch, c.vocab_size} || !logits.is_contiguous())
    return {errc::shape_mismatch, fmt::format("logits is {}; it must be contiguous [{}, {}]", logits.shape(), batch, c.vocab_size)};
  const BlockPoolOptions& po = kv.options();
  if (po.num_layers != c.n_layers || po.n_kv_heads != c.n_kv_heads || po.head_dim != c.head_dim)
    return {errc::shape_mismatch, fmt::format("the pool holds {} layers of {} kv heads of dimension {}; the model needs {}, {}, {} (kv_options)",
                                              po.num_layers, po.n_kv_heads, po.head_dim, c.n_layers, c.n_kv_heads, c.head_dim)};
  std::vector<std::int64_t> start(static_cast<std::size_t>(batch));
  std::vector<std::int32_t> qo_indptr(static_cast<std::size_t>(batch) + 1, 0);
  bool decode_only = true;
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto& t = tokens[static_cast<std::size_t>(b)];
    if (t.empty()) return {errc::invalid_argument, fmt::format("sequence {} of the batch has no new tokens", b)};
    for (const std::int32_t id : t)
      if (id < 0 || id >= c.vocab_size)
        return {errc::out_of_range, fmt::format("token id {} of sequence {} is outside the vocabulary 0..{}", id, b, c.vocab_size - 1)};
    const std::int64_t len = kv.length(seqs[static_cast<std::size_t>(b)]);
    if (len < 0) return {errc::not_found, fmt::format("sequence {} (handle {}) is not in the pool", b, seqs[static_cast<std::size_t>(b)])};
    if (len + static_cast<std::int64_t>(t.size()) > c.context_length)
      return {errc::out_of_range, fmt::format("sequence {} would hold {} tokens; the context length is {}", b, len + t.size(), c.context_length)};
    start[static_cast<std::size_t>(b)] = len;
    qo_indptr[static_cast<std::size_t>(b) + 1] = qo_indptr[static_cast<std::size_t>(b)] + static_cast<std::int32_t>(t.size());
    decode_only = decode_only && t.size() == 1;
  }
  // Room for the new tokens in every sequence, or none.
  for (std::int64_t b = 0; b < batch; ++b) {
    const status st = kv.append(seqs[static_cast<std::size_t>(b)], static_cast<std::int64_t>(tokens[static_cast<std::size_t>(b)].size()));
    if (!st.ok()) {
      for (std::int64_t u = 0; u < b; ++u) (void)kv.truncate(seqs[static_cast<std::size_t>(u)], start[static_cast<std::size_t>(u)]);
      return st;
    }
  }

  const std::int64_t rows = qo_indptr.back(), q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  Tensor<float> x({rows, c.dim}), h({rows, c.dim}), tmp({rows, c.dim});
  Tensor<float> q({rows, q_dim}), k({rows, kv_dim}), v({rows, kv_dim}), o({rows, q_dim});
  Tensor<float> gate({rows, c.ffn_dim}), up({rows, c.ffn_dim});
  // The outputs of a stacked product, before they are copied to q, k, v or gate, up (nothing
  // where no layer stacks its products: f32 weights, or a stack that could not be made).
  Tensor<float> stacked = Tensor<float>::uninitialized({stacked_width_ > 0 ? rows : 0, stacked_width_});
  std::vector<std::int64_t> seq_of(static_cast<std::size_t>(rows)), pos_of(static_cast<std::size_t>(rows));
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int32_t r = qo_indptr[static_cast<std::size_t>(b)]; r < qo_indptr[static_cast<std::size_t>(b) + 1]; ++r) {
      seq_of[static_cast<std::size_t>(r)] = b;
      pos_of[static_cast<std::size_t>(r)] = start[static_cast<std::size_t>(b)] + (r - qo_indptr[static_cast<std::size_t>(b)]);
      const std::int32_t id = tokens[static_cast<std::size_t>(b)][static_cast<std::size_t>(r - qo_indptr[static_cast<std::size_t>(b)])];
      std::copy_n(token_embd_.data() + static_cast<std::int64_t>(id) * c.dim, c.dim, x.data() + r * c.dim);
    }
  auto row = [](Tensor<float>& t, std::int64_t r) { return std::span<float>(t.data() + r * t.dim(1), static_cast<std::size_t>(t.dim(1))); };

  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const Layer& layer = layers_[static_cast<std::size_t>(l)];
    for (std::int64_t r = 0; r < rows; ++r) rms_norm(row(x, r), layer.attn_norm.span(), c.rms_eps, row(h, r));
    apply_stack(layer.qkv, h.view(), {&q, &k, &v}, stacked, pool);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t pos = pos_of[static_cast<std::size_t>(r)];
      rope_adjacent_pairs(row(q, r), c.n_heads, c.head_dim, pos, c.rope_dim, c.rope_base);
      rope_adjacent_pairs(row(k, r), c.n_kv_heads, c.head_dim, pos, c.rope_dim, c.rope_base);
      QUARRY_RETURN_IF_ERROR(kv.write(seqs[static_cast<std::size_t>(seq_of[static_cast<std::size_t>(r)])], l, pos, row(k, r), row(v, r)));
    }
    QUARRY_ASSIGN_OR_RETURN(const BlockPool::Table table, kv.page_table(seqs));
    const TensorView<const float> q3 = TensorView<const float>(q.data(), Shape{rows, c.n_heads, c.head_dim});
    const TensorView<float> o3(o.data(), Shape{rows, c.n_heads, c.head_dim});
    if (observe != nullptr) (*observe)(l, q3);
    QUARRY_RETURN_IF_ERROR(with_pages(kv, l, [&](const auto& kp, const auto& vp) {
      if (decode_only) {
        DecodeAttentionParams p;
        p.pool = pool;
        return paged_decode_attention(q3, kp, vp, table.csr(), o3, p);
      }
      PrefillAttentionParams p;
      p.pool = pool;
      return paged_prefill_attention(q3, qo_indptr, kp, vp, table.csr(), o3, p);
    }));
    layer.wo.apply(o.view(), tmp.view(), pool);
    for (std::int64_t i = 0; i < rows * c.dim; ++i) x.data()[i] += tmp.data()[i];
    for (std::int64_t r = 0; r < rows; ++r) rms_norm(row(x, r), layer.ffn_norm.span(), c.rms_eps, row(h, r));
    apply_stack(layer.gate_up, h.view(), {&gate, &up}, stacked, pool);
    for (std::int64_t r = 0; r < rows; ++r) silu_mul(row(gate, r), row(up, r));
    layer.down.apply(gate.view(), tmp.view(), pool);
    for (std::int64_t i = 0; i < rows * c.dim; ++i) x.data()[i] += tmp.data()[i];
  }
  Tensor<float> last({batch, c.dim});
  for (std::int64_t b = 0; b < batch; ++b)
    rms_norm(row(x, qo_indptr[static_cast<std::size_t>(b) + 1] - 1), output_norm_.span(), c.rms_eps, row(last, b));
  output_.apply(last.view(), logits, pool);
  return {};
}

}  // namespace quarry
