#include "models/fam/model.h"

#include <cmath>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/core/hash.h"
#include "framework/core/host_memory.h"
#include "framework/core/rng.h"
#include "framework/ops/ops.h"

namespace fam {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

namespace {

std::unique_ptr<nn::RmsNorm> Norm(const ModelConfig& c, DType dt) {
  return std::make_unique<nn::RmsNorm>(c.d_model, c.norm_eps, dt, c.norm_weight_offset);
}

}  // namespace

SelfAttention::SelfAttention(const ModelConfig& c, DType dt) {
  const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  q_proj = RegisterModule("q_proj", std::make_unique<nn::Linear>(c.d_model, q, dt, c.qkv_bias));
  k_proj = RegisterModule("k_proj", std::make_unique<nn::Linear>(c.d_model, kv, dt, c.qkv_bias));
  v_proj = RegisterModule("v_proj", std::make_unique<nn::Linear>(c.d_model, kv, dt, c.qkv_bias));
  o_proj = RegisterModule("o_proj", std::make_unique<nn::Linear>(q, c.d_model, dt, c.o_bias));
}

GatedMlp::GatedMlp(const ModelConfig& c, DType dt) {
  gate_proj = RegisterModule("gate_proj",
                             std::make_unique<nn::Linear>(c.d_model, c.ffn_dim, dt, c.mlp_bias));
  up_proj =
      RegisterModule("up_proj", std::make_unique<nn::Linear>(c.d_model, c.ffn_dim, dt, c.mlp_bias));
  down_proj = RegisterModule("down_proj",
                             std::make_unique<nn::Linear>(c.ffn_dim, c.d_model, dt, c.mlp_bias));
}

DecoderLayer::DecoderLayer(const ModelConfig& c, DType dt) {
  input_layernorm = RegisterModule("input_layernorm", Norm(c, dt));
  self_attn = RegisterModule("self_attn", std::make_unique<SelfAttention>(c, dt));
  post_attention_layernorm = RegisterModule("post_attention_layernorm", Norm(c, dt));
  mlp = RegisterModule("mlp", std::make_unique<GatedMlp>(c, dt));
  if (c.sandwich_norms) {
    pre_feedforward_layernorm = RegisterModule("pre_feedforward_layernorm", Norm(c, dt));
    post_feedforward_layernorm = RegisterModule("post_feedforward_layernorm", Norm(c, dt));
  }
}

FamPrompt::FamPrompt(const ModelConfig& c, DType dt) {
  embeddings =
      RegisterParameter("embeddings", Tensor::Zeros({c.attention.fam_length, c.d_model}, dt));
}

FamBackbone::FamBackbone(const ModelConfig& c, DType dt) {
  embed_tokens =
      RegisterModule("embed_tokens", std::make_unique<nn::Embedding>(c.vocab_size, c.d_model, dt));
  for (int64_t i = 0; i < c.n_layers; ++i)
    layers.push_back(
        RegisterModule(absl::StrCat("layers.", i), std::make_unique<DecoderLayer>(c, dt)));
  norm = RegisterModule("norm", Norm(c, dt));
  if (c.attention.type == AttentionType::kFam)
    fam = RegisterModule("fam", std::make_unique<FamPrompt>(c, dt));
}

int64_t StreamingState::Bytes() const {
  int64_t total = 0;
  for (const LayerStreamState& l : layers)
    for (const Tensor* t : {&l.mem_k, &l.mem_v, &l.cur_k, &l.cur_v, &l.fam})
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
  return total;
}

FamModel::FamModel(const ModelConfig& config, DType dtype) : config_(config) {
  ThrowIfError(config_.Validate());
  // Built on the host: refuse before allocating what this machine could never hold.
  ThrowIfError(config_.CheckParametersFit(static_cast<double>(DTypeSize(dtype)),
                                          static_cast<double>(HostMemoryBytes()),
                                          "this machine's"));
  model_ = RegisterModule("model", std::make_unique<FamBackbone>(config_, dtype));
  if (!config_.tie_embeddings)
    lm_head_ = RegisterModule(
        "lm_head", std::make_unique<nn::Linear>(config_.d_model, config_.vocab_size, dtype));
}

Device FamModel::device() const { return model_->embed_tokens->weight().device(); }

Tensor FamModel::OnDevice(const Tensor& t) const {
  const Device d = device();
  return !t.defined() || t.device() == d ? t : ops::To(t, d);
}

Tensor FamModel::lm_head_weight() const {
  return lm_head_ ? lm_head_->weight() : model_->embed_tokens->weight();
}

void FamModel::InitializeWeights(uint64_t seed) {
  NoGradGuard no_grad;
  const double out_scale = 1.0 / std::sqrt(2.0 * config_.n_layers);
  for (auto& [name, t] : NamedParameters()) {
    if (EndsWith(name, "layernorm.weight") || name == "model.norm.weight") {
      ops::FillInPlace(t, 1.0 - config_.norm_weight_offset);  // an effective scale of 1
      continue;
    }
    if (EndsWith(name, ".bias")) {
      ops::FillInPlace(t, 0.0);
      continue;
    }
    double std = config_.init_std;
    if (EndsWith(name, "o_proj.weight") || EndsWith(name, "down_proj.weight")) std *= out_scale;
    Generator gen(seed, ParameterNameHash(name));
    gen.FillNormal(t, 0.0, std);
  }
}

Tensor FamModel::Positions(int64_t batch, int64_t start, int64_t count,
                           const std::vector<int64_t>& offsets) const {
  std::vector<int64_t> pos(batch * count);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t off = offsets.empty() ? 0 : offsets[b];
    for (int64_t i = 0; i < count; ++i) pos[b * count + i] = start + i + off;
  }
  return OnDevice(Tensor::FromInts(pos, {batch, count}));
}

Tensor FamModel::StatePositions(int64_t batch, int64_t block_end, bool initial,
                                const std::vector<int64_t>& offsets) const {
  const int64_t f = config_.fam_rows();
  // S_τ takes the last F positions of the block it compressed; the initial state −F..−1 (§5).
  return Positions(batch, initial ? -f : block_end - f, f, offsets);
}

Tensor FamModel::BlockStatePositions(int64_t batch, int64_t seq,
                                     const std::vector<int64_t>& offsets) const {
  const int64_t f = config_.fam_rows(), block = config_.attention.block_size;
  const int64_t blocks = (seq + block - 1) / block;
  std::vector<int64_t> pos;
  pos.reserve(static_cast<size_t>(blocks * batch * f));
  for (int64_t tau = 0; tau < blocks; ++tau) {
    const int64_t first = tau == 0 ? -f : tau * block - f;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t off = offsets.empty() ? 0 : offsets[b];
      for (int64_t i = 0; i < f; ++i) pos.push_back(first + i + off);
    }
  }
  return OnDevice(Tensor::FromInts(pos, {blocks, batch, f}));
}

FamModel::Heads FamModel::Project(const DecoderLayer& layer, const Tensor& rows,
                                  const Tensor& positions) const {
  const int64_t b = rows.size(0), n = rows.size(1);
  const int64_t h = config_.n_heads, hkv = config_.n_kv_heads, dh = config_.head_dim;
  Tensor x = layer.input_layernorm->Forward(rows);
  const SelfAttention& a = *layer.self_attn;
  Heads out;
  const RopeSpec rope = config_.rope();
  out.q = ops::Rope(ops::Permute(ops::Reshape(a.q_proj->Forward(x), {b, n, h, dh}), {0, 2, 1, 3}),
                    positions, rope);
  out.k = ops::Rope(ops::Permute(ops::Reshape(a.k_proj->Forward(x), {b, n, hkv, dh}), {0, 2, 1, 3}),
                    positions, rope);
  out.v = ops::Permute(ops::Reshape(a.v_proj->Forward(x), {b, n, hkv, dh}), {0, 2, 1, 3});
  return out;
}

Tensor FamModel::OutputProjection(const DecoderLayer& layer, const Tensor& heads) const {
  const int64_t b = heads.size(0), n = heads.size(2);
  Tensor merged =
      ops::Reshape(ops::Permute(heads, {0, 2, 1, 3}), {b, n, config_.n_heads * config_.head_dim});
  Tensor out = layer.self_attn->o_proj->Forward(merged);
  // Sandwich norms (Gemma 2) normalise the attention output before it joins the residual.
  return config_.sandwich_norms ? layer.post_attention_layernorm->Forward(out) : out;
}

Tensor FamModel::FeedForward(const DecoderLayer& layer, const Tensor& residual) const {
  const nn::RmsNorm& pre_norm =
      config_.sandwich_norms ? *layer.pre_feedforward_layernorm : *layer.post_attention_layernorm;
  Tensor n = pre_norm.Forward(residual);
  const GatedMlp& m = *layer.mlp;
  Tensor gate = m.gate_proj->Forward(n);
  gate = config_.activation == FfnActivation::kGeluTanh ? ops::Gelu(gate) : ops::Silu(gate);
  Tensor out = m.down_proj->Forward(ops::Mul(gate, m.up_proj->Forward(n)));
  if (config_.sandwich_norms) out = layer.post_feedforward_layernorm->Forward(out);
  return ops::Add(residual, out);
}

Tensor FamModel::Embed(const Tensor& tokens) const {
  Tensor x = model_->embed_tokens->Forward(OnDevice(tokens));
  if (!config_.embedding_scale) return x;
  return ops::Scale(x, std::sqrt(static_cast<double>(config_.d_model)));
}

Tensor FamModel::FamUpdate(const DecoderLayer& layer, const Tensor& state, bool state_is_initial,
                           const Heads& fam, const Tensor& block_k, const Tensor& block_v) const {
  const double scale = config_.attention_scale(), cap = config_.attn_softcap;
  Tensor heads = ops::Attention(fam.q, {fam.k, block_k}, {fam.v, block_v},
                                {KeyMask::kAll, KeyMask::kAll}, scale, cap);
  Tensor attended = OutputProjection(layer, heads);
  // R = 0 for the first update from the learned initial FAM (the paper's zero residual).
  Tensor residual = state_is_initial ? attended : ops::Add(state, attended);
  return FeedForward(layer, residual);
}

Tensor FamModel::InitialStateLayer(int64_t l, const Tensor& rows, const Tensor& positions) const {
  const DecoderLayer& layer = *model_->layers[l];
  const double scale = config_.attention_scale(), cap = config_.attn_softcap;
  Heads h = Project(layer, rows, positions);
  Tensor heads = ops::Attention(h.q, {h.k}, {h.v}, {KeyMask::kAll}, scale, cap);
  return FeedForward(layer, ops::Add(rows, OutputProjection(layer, heads)));
}

Tensor FamModel::InitialStateRows(int64_t batch, const std::vector<int64_t>& offsets,
                                  Tensor* positions) const {
  const int64_t f = config_.fam_rows(), d = config_.d_model;
  // Without per-sequence offsets every sequence has the same initial state: compute it once.
  const int64_t rows_batch = offsets.empty() ? 1 : batch;
  *positions = Positions(rows_batch, -f, f, offsets);
  return ops::Expand(ops::Unsqueeze(model_->fam->embeddings, 0), {rows_batch, f, d});
}

std::vector<Tensor> FamModel::InitialFamState(int64_t batch,
                                              const std::vector<int64_t>& offsets) const {
  std::vector<Tensor> states;
  if (config_.fam_rows() == 0 || !model_->fam) return states;
  Tensor positions;
  Tensor rows = InitialStateRows(batch, offsets, &positions);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    states.push_back(rows);
    rows = InitialStateLayer(l, rows, positions);
  }
  return states;
}

Tensor FamModel::Logits(const Tensor& hidden) const {
  Tensor logits = ops::Linear(hidden, lm_head_weight());
  if (config_.final_softcap <= 0) return logits;
  const double cap = config_.final_softcap;
  return ops::Scale(ops::Tanh(ops::Scale(logits, 1.0 / cap)), cap);
}

Tensor FamModel::LayerForward(int64_t l, const Tensor& x, const Tensor& positions,
                              const Tensor& state, bool state_is_initial,
                              const Tensor& state_positions, Tensor* final_state) const {
  const AttentionConfig& ac = config_.attention;
  const int64_t batch = x.size(0), seq = x.size(1), block = ac.block_size;
  const double scale = config_.attention_scale(), cap = config_.attn_softcap;
  const DecoderLayer& layer = *model_->layers[l];
  Heads h = Project(layer, x, positions);
  Tensor attn;
  if (ac.type == AttentionType::kFull) {
    attn = ops::Attention(h.q, {h.k}, {h.v}, {KeyMask::kCausal}, scale, cap);
  } else {
    std::vector<Tensor> outputs;
    Tensor s = state;
    bool s_initial = state_is_initial;
    for (int64_t start = 0, tau = 0; start < seq; start += block, ++tau) {
      const int64_t end = std::min(start + block, seq);
      const int64_t mem_start = std::max<int64_t>(0, tau - ac.memory_segments) * block;
      Tensor q = ops::Slice(h.q, 2, start, end);
      Tensor keys = ops::Slice(h.k, 2, mem_start, end);
      Tensor values = ops::Slice(h.v, 2, mem_start, end);
      if (s.defined()) {
        // The state's positions for this block: a view of the table made once per forward (no
        // host-to-device copy, and so no synchronisation, inside the block loop).
        const Tensor fam_positions =
            ops::Reshape(ops::Slice(state_positions, 0, tau, tau + 1), {batch, config_.fam_rows()});
        Heads fh = Project(layer, s, fam_positions);
        outputs.push_back(ops::Attention(q, {fh.k, keys}, {fh.v, values},
                                         {KeyMask::kAll, KeyMask::kCausal}, scale, cap));
        s = FamUpdate(layer, s, s_initial, fh, ops::Slice(h.k, 2, start, end),
                      ops::Slice(h.v, 2, start, end));
        s_initial = false;
      } else {
        outputs.push_back(ops::Attention(q, {keys}, {values}, {KeyMask::kCausal}, scale, cap));
      }
    }
    attn = outputs.size() == 1 ? outputs[0] : ops::Concat(outputs, 2);
    if (final_state) *final_state = s;
  }
  return FeedForward(layer, ops::Add(x, OutputProjection(layer, attn)));
}

Tensor FamModel::RecomputedLayerForward(int64_t l, const Tensor& x, const Tensor& positions,
                                        const Tensor& state, bool state_is_initial,
                                        const Tensor& state_positions, Tensor* final_state) const {
  const DecoderLayer& layer = *model_->layers[l];
  std::vector<Tensor> params;
  for (const Tensor& p : layer.Parameters())
    if (p.requires_grad()) params.push_back(p);
  // LoRA dropout is the layer's only state: each Linear's generator position when the layer first
  // runs, so that the recomputation draws the same masks.
  std::vector<const nn::Linear*> linears;
  std::vector<uint64_t> start_offsets;
  for (const auto& [name, module] : layer.NamedModules()) {
    if (const auto* linear = dynamic_cast<const nn::Linear*>(module)) {
      linears.push_back(linear);
      start_offsets.push_back(linear->lora_dropout_offset());
    }
  }
  auto first_run = std::make_shared<bool>(true);
  ops::CheckpointFn fn = [this, l, state_is_initial, state_positions, final_state, linears,
                          start_offsets, first_run](const std::vector<Tensor>& in) {
    if (*first_run) {
      *first_run = false;
      return LayerForward(l, in[0], in[1], in[2], state_is_initial, state_positions, final_state);
    }
    std::vector<uint64_t> now;
    for (size_t i = 0; i < linears.size(); ++i) {
      now.push_back(linears[i]->lora_dropout_offset());
      linears[i]->RewindLoraDropout(start_offsets[i]);
    }
    Tensor out = LayerForward(l, in[0], in[1], in[2], state_is_initial, state_positions, nullptr);
    for (size_t i = 0; i < linears.size(); ++i) linears[i]->RewindLoraDropout(now[i]);
    return out;
  };
  return ops::Checkpoint(fn, {x, positions, state}, params);
}

ForwardResult FamModel::Forward(const Tensor& tokens, const ForwardOptions& options) const {
  FAM_CHECK(tokens.dim() == 2, "model input must be token ids [batch, T], got ", tokens.Describe());
  const int64_t batch = tokens.size(0), seq = tokens.size(1);
  FAM_CHECK(options.position_offsets.empty() ||
                static_cast<int64_t>(options.position_offsets.size()) == batch,
            "position_offsets has ", options.position_offsets.size(), " entries for batch ", batch);
  const AttentionConfig& ac = config_.attention;
  const bool is_fam = ac.type == AttentionType::kFam;
  const int64_t f = config_.fam_rows();
  const std::vector<int64_t>& offsets = options.position_offsets;

  // FAM state entering each layer: carried in (Random State Passing), or the learned initial FAM
  // pushed through the stack alone (§4), computed layer by layer alongside the sequence so that
  // each layer's parameters are used in one place.
  const bool has_state = is_fam && f > 0;
  const bool carried = has_state && !options.initial_state.empty();
  if (carried) {
    FAM_CHECK(static_cast<int64_t>(options.initial_state.size()) == config_.n_layers,
              "initial_state has ", options.initial_state.size(), " layers, model has ",
              config_.n_layers);
  }
  Tensor init_rows, init_positions;
  if (has_state && !carried) init_rows = InitialStateRows(batch, offsets, &init_positions);

  ForwardResult result;
  Tensor x = Embed(tokens);
  Tensor token_positions = Positions(batch, 0, seq, offsets);
  const Tensor state_positions = has_state ? BlockStatePositions(batch, seq, offsets) : Tensor();
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    Tensor s;
    if (has_state) {
      s = ops::Expand(carried ? options.initial_state[l] : init_rows, {batch, f, config_.d_model});
    }
    Tensor final_state;
    if (options.hooks) options.hooks->BeforeLayer(l);
    x = options.recompute
            ? RecomputedLayerForward(l, x, token_positions, s, !carried, state_positions,
                                     &final_state)
            : LayerForward(l, x, token_positions, s, !carried, state_positions, &final_state);
    if (options.hooks) x = options.hooks->AfterLayer(l, x);
    if (has_state && !carried && l + 1 < config_.n_layers) {
      init_rows = InitialStateLayer(l, init_rows, init_positions);
      if (options.hooks) init_rows = options.hooks->AfterLayer(l, init_rows);
    }
    if (final_state.defined()) result.final_state.push_back(final_state);
  }
  result.hidden = model_->norm->Forward(x);
  if (options.compute_logits) result.logits = Logits(result.hidden);
  return result;
}

namespace {

// Weighted mean of per-token losses: sum / (total weight, or count, of the non-ignored targets).
Tensor MeanTokenLoss(const Tensor& losses, const Tensor& flat_targets, const Tensor& flat_weights) {
  double normaliser = 0;
  if (flat_weights.defined()) {
    std::vector<int64_t> t = flat_targets.ToInts();
    std::vector<double> w = flat_weights.ToDoubles();
    for (size_t i = 0; i < t.size(); ++i)
      if (t[i] != -100) normaliser += w[i];
  } else {
    for (int64_t t : flat_targets.ToInts()) normaliser += t != -100;
  }
  return ops::Scale(ops::SumAll(losses), normaliser > 0 ? 1.0 / normaliser : 0.0);
}

}  // namespace

Tensor FamModel::Loss(const Tensor& logits, const Tensor& targets, const Tensor& weights) const {
  const int64_t v = logits.size(-1);
  Tensor flat_targets = ops::Reshape(targets, {-1});
  Tensor flat_weights = weights.defined() ? ops::Reshape(weights, {-1}) : Tensor();
  Tensor losses = ops::CrossEntropy(ops::Reshape(logits, {-1, v}), OnDevice(flat_targets),
                                    OnDevice(flat_weights));
  return MeanTokenLoss(losses, flat_targets, flat_weights);
}

Tensor FamModel::TokenLosses(const Tensor& hidden, const Tensor& targets, const Tensor& weights,
                             int64_t chunk_tokens) const {
  Tensor rows = ops::Reshape(hidden, {-1, hidden.size(-1)});
  const Tensor t = OnDevice(targets), w = OnDevice(weights);
  if (config_.final_softcap <= 0)
    return ops::LinearCrossEntropy(rows, lm_head_weight(), t, w, chunk_tokens);
  // Soft-capped logits: the fused kernel does not cap, so chunk by hand.
  const int64_t n = rows.size(0), chunk = chunk_tokens > 0 ? chunk_tokens : std::max<int64_t>(n, 1);
  std::vector<Tensor> parts;
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t end = std::min(n, start + chunk);
    parts.push_back(ops::CrossEntropy(Logits(ops::Slice(rows, 0, start, end)),
                                      ops::Slice(t, 0, start, end),
                                      w.defined() ? ops::Slice(w, 0, start, end) : Tensor()));
  }
  return parts.size() == 1 ? parts[0] : ops::Concat(parts, 0);
}

Tensor FamModel::LossFromHidden(const Tensor& hidden, const Tensor& targets, const Tensor& weights,
                                int64_t chunk_tokens) const {
  Tensor flat_targets = ops::Reshape(targets, {-1});
  Tensor flat_weights = weights.defined() ? ops::Reshape(weights, {-1}) : Tensor();
  Tensor losses = TokenLosses(hidden, flat_targets, flat_weights, chunk_tokens);
  return MeanTokenLoss(losses, flat_targets, flat_weights);
}

StreamingState FamModel::NewStreamingState(int64_t batch) const {
  StreamingState state;
  state.batch = batch;
  state.layers.resize(config_.n_layers);
  if (config_.fam_rows() > 0) {
    NoGradGuard no_grad;
    std::vector<Tensor> init = InitialFamState(1, {});
    for (int64_t l = 0; l < config_.n_layers; ++l) {
      state.layers[l].fam =
          ops::Contiguous(ops::Expand(init[l], {batch, config_.fam_rows(), config_.d_model}));
      state.layers[l].fam_is_initial = true;
    }
  }
  return state;
}

Tensor FamModel::ForwardStreaming(const Tensor& tokens, StreamingState& state) const {
  NoGradGuard no_grad;
  FAM_CHECK(tokens.dim() == 2 && tokens.size(0) == state.batch, "streaming input must be [",
            state.batch, ", n], got ", tokens.Describe());
  const AttentionConfig& ac = config_.attention;
  const bool windowed = ac.type != AttentionType::kFull;
  const int64_t block = windowed ? ac.block_size : INT64_MAX;
  const int64_t f = config_.fam_rows(), batch = state.batch;
  const double scale = config_.attention_scale(), cap = config_.attn_softcap;
  auto append = [](const Tensor& a, const Tensor& b) {
    return a.defined() && a.size(2) > 0 ? ops::Concat({a, b}, 2) : ops::Contiguous(b);
  };

  std::vector<Tensor> logits;
  const int64_t n = tokens.size(1);
  for (int64_t done = 0; done < n;) {
    // A piece never crosses a block boundary, so block ends line up with training's blocks.
    const int64_t in_block = windowed ? state.position % block : state.position;
    const int64_t len = windowed ? std::min(n - done, block - in_block) : n - done;
    Tensor x = Embed(ops::Slice(tokens, 1, done, done + len));
    Tensor positions = Positions(batch, state.position, len, {});
    const int64_t block_start = state.position - in_block;
    const bool completes_block = windowed && in_block + len == block;
    for (int64_t l = 0; l < config_.n_layers; ++l) {
      const DecoderLayer& layer = *model_->layers[l];
      LayerStreamState& ls = state.layers[l];
      Heads h = Project(layer, x, positions);
      ls.cur_k = append(ls.cur_k, h.k);
      ls.cur_v = append(ls.cur_v, h.v);
      Tensor keys = ls.mem_k.defined() ? ops::Concat({ls.mem_k, ls.cur_k}, 2) : ls.cur_k;
      Tensor values = ls.mem_v.defined() ? ops::Concat({ls.mem_v, ls.cur_v}, 2) : ls.cur_v;
      Tensor attn;
      Heads fh;
      if (f > 0) {
        fh = Project(layer, ls.fam,
                     StatePositions(batch, block_start, ls.fam_is_initial && block_start == 0, {}));
        attn = ops::Attention(h.q, {fh.k, keys}, {fh.v, values}, {KeyMask::kAll, KeyMask::kCausal},
                              scale, cap);
      } else {
        attn = ops::Attention(h.q, {keys}, {values}, {KeyMask::kCausal}, scale, cap);
      }
      x = FeedForward(layer, ops::Add(x, OutputProjection(layer, attn)));
      if (completes_block) {
        if (f > 0) {
          ls.fam = FamUpdate(layer, ls.fam, ls.fam_is_initial, fh, ls.cur_k, ls.cur_v);
          ls.fam_is_initial = false;
        }
        // Roll the window: keep the last m complete blocks as memory.
        const int64_t keep = ac.memory_segments * block;
        Tensor mk = keys, mv = values;
        if (mk.size(2) > keep) {
          mk = ops::Slice(mk, 2, mk.size(2) - keep, mk.size(2));
          mv = ops::Slice(mv, 2, mv.size(2) - keep, mv.size(2));
        }
        ls.mem_k = ops::Contiguous(mk);
        ls.mem_v = ops::Contiguous(mv);
        ls.cur_k = Tensor();
        ls.cur_v = Tensor();
      }
    }
    logits.push_back(Logits(model_->norm->Forward(x)));
    state.position += len;
    done += len;
  }
  return logits.size() == 1 ? logits[0] : ops::Concat(logits, 1);
}

}  // namespace fam
