// An independent reference of TransformerFAM written from FAM_SPEC.md and FORMATS.md alone, for the
// golden tests: plain loops over std::vector<double>, weights in a std::map keyed by the FORMATS.md
// names, no framework code. It computes inference-mode logits (no position offset, no carried
// state) the way the spec reads: blocks in order, and for each block every layer in turn, each
// layer keeping its own state (the keys/values of every token it has seen and its FAM state S).
// Which keys a query sees is one explicit predicate (Sees) that follows §2 line by line.
// Deliberate mistakes (RefMistakes) exist only so tests can prove they would catch them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace fam::reference {

enum class RefAttention { kFull, kBswa, kFam };

struct RefConfig {
  int64_t vocab_size = 0;
  int64_t d_model = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;
  double norm_eps = 1e-6;
  double rope_base = 10000.0;
  bool tie_embeddings = false;
  RefAttention type = RefAttention::kFull;
  int64_t block_size = 1;       // B
  int64_t memory_segments = 0;  // m
  int64_t fam_length = 0;       // F (kFam only)
};

// Departures from the spec, each off by default; tests switch one on and expect a different answer.
struct RefMistakes {
  bool residual_on_first_update = false;  // R = S instead of 0 for the update from the learned init
  bool fam_rows_see_memory = false;       // FAM queries also see the memory segments' tokens
  bool tokens_skip_fam = false;           // block tokens do not see S_{τ-1}
  bool state_positions_at_block_start = false;  // S_τ at τB..τB+F-1 instead of e_τ-F..e_τ-1
  bool initial_fam_not_propagated = false;      // every layer starts from P itself
};

// Weights by FORMATS.md name, each flattened row-major in its FORMATS.md shape.
using RefWeights = std::map<std::string, std::vector<double>>;

class Reference {
 public:
  Reference(const RefConfig& config, const RefWeights& weights, const RefMistakes& mistakes = {})
      : c_(config), w_(weights), bug_(mistakes) {}

  // Logits [T, vocab] (row-major) of one sequence of token ids.
  std::vector<double> Logits(const std::vector<int64_t>& tokens) const {
    const int64_t T = static_cast<int64_t>(tokens.size());
    const int64_t d = c_.d_model;
    const int64_t F = c_.type == RefAttention::kFam ? c_.fam_length : 0;
    const int64_t B = c_.block_size;
    const std::vector<double>& embed = W("model.embed_tokens.weight", c_.vocab_size * d);

    // Per-layer state, carried from block to block.
    std::vector<LayerState> state(c_.n_layers);
    if (F > 0) InitialFam(state);

    std::vector<double> logits;
    for (int64_t start = 0; start < T; start += B) {
      const int64_t tau = start / B;
      const int64_t end = std::min(start + B, T);  // e_τ
      // Rows entering layer 0: the block's token embeddings.
      std::vector<Row> x;
      for (int64_t t = start; t < end; ++t) {
        if (tokens[t] < 0 || tokens[t] >= c_.vocab_size) throw std::invalid_argument("token id");
        Row r;
        r.pos = t;
        r.v.assign(embed.begin() + tokens[t] * d, embed.begin() + (tokens[t] + 1) * d);
        x.push_back(r);
      }
      for (int64_t l = 0; l < c_.n_layers; ++l) x = BlockLayer(l, tau, start, end, x, state[l]);
      for (const Row& r : x) {
        std::vector<double> h = RmsNorm(r.v, W("model.norm.weight", d));
        std::vector<double> out = Linear(LmHead(), c_.vocab_size, d, h);
        logits.insert(logits.end(), out.begin(), out.end());
      }
    }
    return logits;
  }

 private:
  struct Row {
    std::vector<double> v;  // d_model
    int64_t pos = 0;        // RoPE position
  };
  // Keys/values of one row after RoPE: k and v are [n_kv_heads * head_dim].
  struct KeyValue {
    std::vector<double> k, v;
  };
  enum class Kind { kToken, kFam };
  struct Key {
    Kind kind;
    int64_t index;  // token: absolute position t; FAM: row r of S_{τ-1}
    const KeyValue* kv;
  };
  struct LayerState {
    std::vector<KeyValue> token_kv;  // keys/values of every token this layer has seen, by position
    std::vector<Row> fam;            // S_{τ-1}
    bool fam_is_initial = true;
  };

  const std::vector<double>& W(const std::string& name, int64_t numel) const {
    auto it = w_.find(name);
    if (it == w_.end()) throw std::invalid_argument("reference: missing weight " + name);
    if (static_cast<int64_t>(it->second.size()) != numel)
      throw std::invalid_argument("reference: weight " + name + " has the wrong size");
    return it->second;
  }
  std::string LayerName(int64_t l, const std::string& leaf) const {
    return "model.layers." + std::to_string(l) + "." + leaf + ".weight";
  }
  const std::vector<double>& LmHead() const {
    return c_.tie_embeddings ? W("model.embed_tokens.weight", c_.vocab_size * c_.d_model)
                             : W("lm_head.weight", c_.vocab_size * c_.d_model);
  }

  // ---- Layer math (FORMATS.md) ----

  // y = x · Wᵀ with W [out, in].
  static std::vector<double> Linear(const std::vector<double>& w, int64_t out, int64_t in,
                                    const std::vector<double>& x) {
    std::vector<double> y(out, 0.0);
    for (int64_t o = 0; o < out; ++o) {
      double s = 0.0;
      for (int64_t i = 0; i < in; ++i) s += w[o * in + i] * x[i];
      y[o] = s;
    }
    return y;
  }

  std::vector<double> RmsNorm(const std::vector<double>& x, const std::vector<double>& w) const {
    double ms = 0.0;
    for (double v : x) ms += v * v;
    ms /= static_cast<double>(x.size());
    const double inv = 1.0 / std::sqrt(ms + c_.norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  }

  // Rotate-half RoPE of every head of a [heads * head_dim] vector at position pos.
  std::vector<double> Rope(std::vector<double> v, int64_t heads, int64_t pos) const {
    const int64_t D = c_.head_dim, half = D / 2;
    for (int64_t h = 0; h < heads; ++h) {
      double* p = v.data() + h * D;
      for (int64_t i = 0; i < half; ++i) {
        const double inv_freq = std::pow(c_.rope_base, -2.0 * static_cast<double>(i) / D);
        const double theta = static_cast<double>(pos) * inv_freq;
        const double a = p[i], b = p[i + half];
        p[i] = a * std::cos(theta) - b * std::sin(theta);
        p[i + half] = b * std::cos(theta) + a * std::sin(theta);
      }
    }
    return v;
  }

  KeyValue KeysValues(int64_t l, const Row& row) const {
    const int64_t d = c_.d_model, kvd = c_.n_kv_heads * c_.head_dim;
    std::vector<double> n = RmsNorm(row.v, W(LayerName(l, "input_layernorm"), d));
    KeyValue kv;
    kv.k = Rope(Linear(W(LayerName(l, "self_attn.k_proj"), kvd * d), kvd, d, n), c_.n_kv_heads,
                row.pos);
    kv.v = Linear(W(LayerName(l, "self_attn.v_proj"), kvd * d), kvd, d, n);
    return kv;
  }

  // o_proj(Attn(query row → keys)): the attention branch of one row, before the residual.
  std::vector<double> Attend(int64_t l, const Row& row, const std::vector<Key>& keys) const {
    const int64_t d = c_.d_model, D = c_.head_dim, H = c_.n_heads, qd = H * D;
    if (keys.empty()) throw std::logic_error("reference: a query sees no key");
    std::vector<double> n = RmsNorm(row.v, W(LayerName(l, "input_layernorm"), d));
    std::vector<double> q =
        Rope(Linear(W(LayerName(l, "self_attn.q_proj"), qd * d), qd, d, n), H, row.pos);
    std::vector<double> heads(qd, 0.0);
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h * c_.n_kv_heads / H;  // ⌊h·n_kv/n_heads⌋
      std::vector<double> score(keys.size());
      double max_score = -1e300;
      for (size_t j = 0; j < keys.size(); ++j) {
        double s = 0.0;
        for (int64_t i = 0; i < D; ++i) s += q[h * D + i] * keys[j].kv->k[g * D + i];
        score[j] = s * scale;
        max_score = std::max(max_score, score[j]);
      }
      double total = 0.0;
      for (double& s : score) total += (s = std::exp(s - max_score));
      for (size_t j = 0; j < keys.size(); ++j)
        for (int64_t i = 0; i < D; ++i)
          heads[h * D + i] += score[j] / total * keys[j].kv->v[g * D + i];
    }
    return Linear(W(LayerName(l, "self_attn.o_proj"), d * qd), d, qd, heads);
  }

  // FF(RMSNorm₂(a)) = down(silu(gate(n)) · up(n)).
  std::vector<double> FeedForward(int64_t l, const std::vector<double>& a) const {
    const int64_t d = c_.d_model, f = c_.ffn_dim;
    std::vector<double> n = RmsNorm(a, W(LayerName(l, "post_attention_layernorm"), d));
    std::vector<double> gate = Linear(W(LayerName(l, "mlp.gate_proj"), f * d), f, d, n);
    std::vector<double> up = Linear(W(LayerName(l, "mlp.up_proj"), f * d), f, d, n);
    std::vector<double> act(f);
    for (int64_t i = 0; i < f; ++i) act[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
    return Linear(W(LayerName(l, "mlp.down_proj"), d * f), d, f, act);
  }

  static std::vector<double> Add(std::vector<double> a, const std::vector<double>& b) {
    for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    return a;
  }

  // ---- Visibility (FAM_SPEC.md §2) ----

  // Whether a query (a token at position t of block τ, or a FAM row of S_{τ-1}) sees a key.
  bool Sees(Kind query, int64_t t, int64_t tau, const Key& key) const {
    const int64_t B = c_.block_size, m = c_.memory_segments;
    if (c_.type == RefAttention::kFull) return key.kind == Kind::kToken && key.index <= t;
    const bool in_memory = key.kind == Kind::kToken &&
                           key.index / B >= std::max<int64_t>(0, tau - m) &&
                           key.index / B <= tau - 1;
    const bool in_block = key.kind == Kind::kToken && key.index / B == tau;
    if (query == Kind::kToken) {
      if (key.kind == Kind::kFam) return !bug_.tokens_skip_fam;  // all F rows of S_{τ-1}
      return in_memory || (in_block && key.index <= t);
    }
    // A FAM row of S_{τ-1}: all F rows, all tokens of block τ, never the memory segments.
    if (key.kind == Kind::kFam) return true;
    return in_block || (bug_.fam_rows_see_memory && in_memory);
  }

  // ---- One layer on one block (FAM_SPEC.md §3) ----

  std::vector<Row> BlockLayer(int64_t l, int64_t tau, int64_t start, int64_t end,
                              const std::vector<Row>& x, LayerState& st) const {
    const int64_t F = static_cast<int64_t>(st.fam.size());
    // Keys/values: this block's tokens join the layer's token cache; S_{τ-1} gives F more.
    for (const Row& r : x) st.token_kv.push_back(KeysValues(l, r));
    std::vector<KeyValue> fam_kv;
    for (const Row& r : st.fam) fam_kv.push_back(KeysValues(l, r));
    std::vector<Key> all;
    for (int64_t s = 0; s < end; ++s) all.push_back({Kind::kToken, s, &st.token_kv[s]});
    for (int64_t r = 0; r < F; ++r) all.push_back({Kind::kFam, r, &fam_kv[r]});

    auto visible = [&](Kind kind, int64_t t) {
      std::vector<Key> keys;
      for (const Key& k : all)
        if (Sees(kind, t, tau, k)) keys.push_back(k);
      return keys;
    };

    // Block tokens: A_X = X + Attn; Y = A_X + FF(RMSNorm₂(A_X)).
    std::vector<Row> y;
    for (const Row& r : x) {
      Row out;
      out.pos = r.pos;
      std::vector<double> a = Add(r.v, Attend(l, r, visible(Kind::kToken, r.pos)));
      out.v = Add(a, FeedForward(l, a));
      y.push_back(out);
    }
    // FAM rows: A_F = R + Attn; S_τ = A_F + FF(RMSNorm₂(A_F)); R = 0 on the first update.
    if (F > 0) {
      const bool zero_residual = st.fam_is_initial && !bug_.residual_on_first_update;
      std::vector<Row> next;
      for (int64_t r = 0; r < F; ++r) {
        std::vector<double> attn = Attend(l, st.fam[r], visible(Kind::kFam, -1));
        std::vector<double> a = zero_residual ? attn : Add(st.fam[r].v, attn);
        Row s;
        s.v = Add(a, FeedForward(l, a));
        // §5: S_τ takes positions e_τ-F .. e_τ-1.
        s.pos = bug_.state_positions_at_block_start ? start + r : end - F + r;
        next.push_back(s);
      }
      st.fam = next;
      st.fam_is_initial = false;
    }
    return y;
  }

  // ---- The initial FAM (FAM_SPEC.md §4) ----

  // I⁰ = P; Iˡ⁺¹ = layer l on the F rows of Iˡ alone (bidirectional, normal residual), positions
  // -F..-1; layer l starts from S_{-1}ˡ = Iˡ.
  void InitialFam(std::vector<LayerState>& state) const {
    const int64_t F = c_.fam_length, d = c_.d_model;
    const std::vector<double>& p = W("model.fam.embeddings", F * d);
    std::vector<Row> rows(F);
    for (int64_t r = 0; r < F; ++r) {
      rows[r].v.assign(p.begin() + r * d, p.begin() + (r + 1) * d);
      rows[r].pos = r - F;
    }
    const std::vector<Row> prompt = rows;
    for (int64_t l = 0; l < c_.n_layers; ++l) {
      state[l].fam = bug_.initial_fam_not_propagated ? prompt : rows;
      state[l].fam_is_initial = true;
      std::vector<KeyValue> kv;
      for (const Row& r : rows) kv.push_back(KeysValues(l, r));
      std::vector<Key> keys;
      for (int64_t r = 0; r < F; ++r) keys.push_back({Kind::kFam, r, &kv[r]});
      std::vector<Row> next(F);
      for (int64_t r = 0; r < F; ++r) {
        std::vector<double> a = Add(rows[r].v, Attend(l, rows[r], keys));
        next[r].v = Add(a, FeedForward(l, a));
        next[r].pos = rows[r].pos;
      }
      rows = next;
    }
  }

  RefConfig c_;
  RefWeights w_;
  RefMistakes bug_;
};

}  // namespace fam::reference
