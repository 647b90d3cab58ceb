// TransformerFAM (FAM_SPEC.md): a decoder-only, pre-RMSNorm, SwiGLU, RoPE model whose attention is
// full causal, Block Sliding Window Attention (BSWA), or BSWA + Feedback Attention Memory (FAM),
// all from one definition. The block's pretrained-family variants (ModelConfig: biases, GeGLU,
// Gemma's (1 + w) norms, embedding scale and Gemma 2's sandwich norms and soft-capping, RoPE
// rescaling) change only the layer functions, so FAM applies to every family alike. Training runs
// the whole sequence layer by layer and block by block through the attention primitive; streaming
// inference runs one chunk at a time through all layers carrying a small per-layer state
// (memory-segment keys/values + FAM), built from the same layer functions. Parameter names follow
// FORMATS.md (Hugging Face Llama style).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "framework/nn/module.h"
#include "models/fam/model_config.h"

namespace fam {

struct SelfAttention : nn::Module {
  SelfAttention(const ModelConfig& c, DType dtype);
  nn::Linear *q_proj, *k_proj, *v_proj, *o_proj;
};

// down(act(gate(x)) · up(x)), act = silu (SwiGLU) or GELU-tanh (GeGLU).
struct GatedMlp : nn::Module {
  GatedMlp(const ModelConfig& c, DType dtype);
  nn::Linear *gate_proj, *up_proj, *down_proj;
};

struct DecoderLayer : nn::Module {
  DecoderLayer(const ModelConfig& c, DType dtype);
  nn::RmsNorm* input_layernorm;
  SelfAttention* self_attn;
  // Before the feed-forward; with sandwich norms (Gemma 2) it normalises the attention output
  // instead, and pre_/post_feedforward_layernorm wrap the feed-forward.
  nn::RmsNorm* post_attention_layernorm;
  GatedMlp* mlp;
  nn::RmsNorm* pre_feedforward_layernorm = nullptr;
  nn::RmsNorm* post_feedforward_layernorm = nullptr;
};

// The learned initial FAM (FORMATS.md: model.fam.embeddings [fam_length, d_model]).
struct FamPrompt : nn::Module {
  FamPrompt(const ModelConfig& c, DType dtype);
  Tensor embeddings;
};

struct FamBackbone : nn::Module {
  FamBackbone(const ModelConfig& c, DType dtype);
  nn::Embedding* embed_tokens;
  std::vector<DecoderLayer*> layers;
  nn::RmsNorm* norm;
  FamPrompt* fam = nullptr;  // FAM models only
};

// Hooks around every use of a decoder layer's parameters in training forward passes. ZeRO-3
// (framework/dist/sharded_parameters.h) gathers a layer's parameters in BeforeLayer and releases
// them in AfterLayer, whose returned tensor (an identity of `output`) re-gathers them when backward
// reaches the layer. `layer` is the index in FamBackbone::layers; a layer may run more than once
// per forward: AfterLayer is then called for each of its outputs (the sequence, then the
// initial-FAM rows of the next layer).
class LayerHooks {
 public:
  virtual ~LayerHooks() = default;
  virtual void BeforeLayer(int64_t layer) = 0;
  virtual Tensor AfterLayer(int64_t layer, const Tensor& output) = 0;
};

struct ForwardOptions {
  // Per-sequence integer added to every position (Random Position Offset); empty = all 0.
  std::vector<int64_t> position_offsets;
  // Per-layer FAM state [1 or batch, F, d_model] carried in by Random State Passing; empty = start
  // from the learned initial FAM. A carried state takes the positions of the initial state (ours).
  std::vector<Tensor> initial_state;
  bool compute_logits = true;
  // Activation recomputation: keep only each layer's input and recompute the layer in backward
  // (ops::Checkpoint). The rerun happens when backward reaches the layer, i.e. after the identity
  // returned by LayerHooks::AfterLayer has run its backward.
  bool recompute = false;
  LayerHooks* hooks = nullptr;  // not owned; null = none
};

struct ForwardResult {
  Tensor hidden;                    // [batch, T, d_model] after the final norm
  Tensor logits;                    // [batch, T, vocab] (when compute_logits)
  std::vector<Tensor> final_state;  // FAM: per layer, the state after the last block [batch, F, d]
};

// Per-layer carried state of streaming inference.
struct LayerStreamState {
  Tensor mem_k, mem_v;  // keys/values of past complete blocks (≤ m blocks; all past keys for full)
  Tensor cur_k, cur_v;  // keys/values of the current, incomplete block
  Tensor fam;           // FAM state S_{τ-1} [batch, F, d_model]
  bool fam_is_initial = true;
};

struct StreamingState {
  int64_t batch = 1;
  int64_t position = 0;  // tokens consumed so far
  std::vector<LayerStreamState> layers;
  // Bytes held by the carried tensors (for memory reports).
  int64_t Bytes() const;
};

class FamModel : public nn::Module {
 public:
  // dtype: parameter dtype (f32 for CPU training, f64 for gradchecks).
  explicit FamModel(const ModelConfig& config, DType dtype = DType::kF32);

  const ModelConfig& config() const { return config_; }
  // Where the parameters live (nn::Module::To moves them). Token ids, targets and weights may be
  // passed from the host or from this device; the model moves them here itself.
  Device device() const;
  // t on the model's device (t itself when already there or undefined).
  Tensor OnDevice(const Tensor& t) const;
  // Seeded N(0, init_std²) weights (output projections scaled by 1/sqrt(2·n_layers)), norms at 1.
  // Each parameter draws from its own Philox stream keyed by its name: independent of order.
  void InitializeWeights(uint64_t seed);

  // Whole-sequence forward of tokens [batch, T] (i32/i64).
  ForwardResult Forward(const Tensor& tokens, const ForwardOptions& options = {}) const;
  // Mean token cross-entropy of logits [batch, T, V] against targets [batch, T]; optional per-token
  // weights [batch, T] (weighted mean); targets equal to -100 are ignored.
  Tensor Loss(const Tensor& logits, const Tensor& targets, const Tensor& weights = Tensor()) const;
  // The same loss from the final hidden states [batch, T, d_model] (ForwardResult::hidden, with
  // compute_logits off) through the chunked LM head + cross-entropy (ops::LinearCrossEntropy):
  // at most chunk_tokens × vocab logits exist at once; chunk_tokens <= 0 = all tokens at once.
  Tensor LossFromHidden(const Tensor& hidden, const Tensor& targets, const Tensor& weights,
                        int64_t chunk_tokens) const;
  // The per-token losses behind LossFromHidden: hidden [..., d_model], targets [N] and weights [N]
  // (or undefined) flattened; soft-capped logits (final_softcap) are chunked here instead.
  Tensor TokenLosses(const Tensor& hidden, const Tensor& targets, const Tensor& weights,
                     int64_t chunk_tokens) const;

  // The initial FAM state of every layer (§4): P pushed through the stack alone.
  std::vector<Tensor> InitialFamState(int64_t batch, const std::vector<int64_t>& offsets) const;

  // Streaming inference (no gradients, no training tricks): logits [batch, n, V] of the next n
  // tokens.
  StreamingState NewStreamingState(int64_t batch = 1) const;
  Tensor ForwardStreaming(const Tensor& tokens, StreamingState& state) const;

  const FamBackbone& backbone() const { return *model_; }
  Tensor lm_head_weight() const;

 private:
  struct Heads {
    Tensor q, k, v;  // q [b, H, n, Dh] and k [b, Hkv, n, Dh] with RoPE; v [b, Hkv, n, Dh]
  };
  Heads Project(const DecoderLayer& layer, const Tensor& rows, const Tensor& positions) const;
  Tensor OutputProjection(const DecoderLayer& layer, const Tensor& heads) const;
  Tensor FeedForward(const DecoderLayer& layer, const Tensor& residual) const;
  // Token embeddings (× sqrt(d_model) with embedding_scale).
  Tensor Embed(const Tensor& tokens) const;
  // S_τ from the FAM rows' heads over [S_{τ-1}, block tokens] (FAM_SPEC.md §3).
  Tensor FamUpdate(const DecoderLayer& layer, const Tensor& state, bool state_is_initial,
                   const Heads& fam, const Tensor& block_k, const Tensor& block_v) const;
  // The learned initial FAM rows [1 or batch, F, d] and their positions (§4).
  Tensor InitialStateRows(int64_t batch, const std::vector<int64_t>& offsets,
                          Tensor* positions) const;
  // Layer `l` of the initial-state pass: FAM rows attending to themselves only.
  Tensor InitialStateLayer(int64_t l, const Tensor& rows, const Tensor& positions) const;
  // Decoder layer `l` over the whole sequence x [batch, T, d] (layer input, token positions; for
  // FAM the state entering the first block and BlockStatePositions). Returns the layer output;
  // *final_state receives the FAM state after the last block (undefined without FAM).
  Tensor LayerForward(int64_t l, const Tensor& x, const Tensor& positions, const Tensor& state,
                      bool state_is_initial, const Tensor& state_positions,
                      Tensor* final_state) const;
  // LayerForward through ops::Checkpoint (activation recomputation): keeps only the layer's inputs
  // and recomputes the layer in backward, replaying its LoRA dropout masks. *final_state comes
  // from the forward without gradients (the trainer detaches it anyway).
  Tensor RecomputedLayerForward(int64_t l, const Tensor& x, const Tensor& positions,
                                const Tensor& state, bool state_is_initial,
                                const Tensor& state_positions, Tensor* final_state) const;
  Tensor Positions(int64_t batch, int64_t start, int64_t count,
                   const std::vector<int64_t>& offsets) const;
  Tensor StatePositions(int64_t batch, int64_t block_end, bool initial,
                        const std::vector<int64_t>& offsets) const;
  // StatePositions of every block of a sequence of `seq` tokens at once: [blocks, batch, F] on
  // the model's device (LayerForward slices block τ's rows).
  Tensor BlockStatePositions(int64_t batch, int64_t seq, const std::vector<int64_t>& offsets) const;
  Tensor Logits(const Tensor& hidden) const;

  ModelConfig config_;
  FamBackbone* model_;
  nn::Linear* lm_head_ = nullptr;
};

}  // namespace fam
