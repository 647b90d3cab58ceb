#include "models/fam/gguf_import.h"

#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/core/printable_text.h"
#include "framework/io/gguf.h"

namespace fam {
namespace {

// llama.cpp's per-layer tensor names → FORMATS.md's.
const std::vector<std::pair<std::string, std::string>>& LayerNames() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"}};
  return names;
}

// Undoes the converter's interleaving of each head's two rotary halves: GGUF row h·D + 2j + p
// holds row h·D + p·D/2 + j of the checkpoint it came from.
Tensor UnpermuteRows(const Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1), hd = rows / heads, half = hd / 2;
  Tensor out = Tensor::Empty(w.shape(), DType::kF32);
  const float* src = w.data<float>();
  float* dst = out.data<float>();
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t p = 0; p < 2; ++p)
      for (int64_t j = 0; j < half; ++j)
        std::memcpy(dst + (h * hd + p * half + j) * cols, src + (h * hd + 2 * j + p) * cols,
                    static_cast<size_t>(cols) * sizeof(float));
  return out;
}

absl::StatusOr<HfImportResult> Import(const std::string& gguf_path, const std::string& out_dir,
                                      const HfImportOptions& options) {
  absl::StatusOr<std::unique_ptr<io::GgufFile>> opened = io::GgufFile::Open(gguf_path);
  if (!opened.ok()) return opened.status();
  const io::GgufFile& g = **opened;
  absl::StatusOr<std::string> arch = g.String("general.architecture");
  if (!arch.ok()) return arch.status();
  if (*arch != "llama")
    return absl::InvalidArgumentError(absl::StrCat(
        gguf_path, ": general.architecture: \"", *arch,
        "\" is not supported (llama only; import other families from their HF checkpoint)"));
  auto key = [&](const char* k) { return absl::StrCat(*arch, ".", k); };
  const io::GgufTensorInfo* embed = g.Find("token_embd.weight");
  if (embed == nullptr || embed->shape.size() != 2)
    return absl::InvalidArgumentError(absl::StrCat(gguf_path, ": token_embd.weight: missing"));
  if (g.Find("rope_freqs.weight") != nullptr)
    return absl::InvalidArgumentError(absl::StrCat(
        gguf_path,
        ": rope_freqs.weight: per-frequency RoPE scaling (Llama 3.1+) is not read from "
        "GGUF; import the HF checkpoint"));

  ModelConfig c;
  c.family = "llama";
  absl::Status status;
  auto integer = [&](const std::string& k, std::optional<int64_t> fallback) -> int64_t {
    absl::StatusOr<int64_t> v = g.Int(k, fallback);
    if (!v.ok() && status.ok()) status = v.status();
    return v.ok() ? *v : 0;
  };
  auto number = [&](const std::string& k, std::optional<double> fallback) -> double {
    absl::StatusOr<double> v = g.Number(k, fallback);
    if (!v.ok() && status.ok()) status = v.status();
    return v.ok() ? *v : 0;
  };
  c.d_model = integer(key("embedding_length"), std::nullopt);
  c.n_layers = integer(key("block_count"), std::nullopt);
  c.ffn_dim = integer(key("feed_forward_length"), std::nullopt);
  c.n_heads = integer(key("attention.head_count"), std::nullopt);
  c.n_kv_heads = integer(key("attention.head_count_kv"), c.n_heads);
  c.vocab_size = integer(key("vocab_size"), embed->shape[0]);
  c.norm_eps = number(key("attention.layer_norm_rms_epsilon"), 1e-5);
  c.rope_base = number(key("rope.freq_base"), 10000.0);
  if (!status.ok()) return status;
  c.head_dim = integer(key("attention.key_length"), c.n_heads > 0 ? c.d_model / c.n_heads : 0);
  const int64_t rotary = integer(key("rope.dimension_count"), c.head_dim);
  if (!status.ok()) return status;
  if (rotary != c.head_dim)
    return absl::InvalidArgumentError(absl::StrCat(gguf_path, ": ", key("rope.dimension_count"),
                                                   ": ", rotary, " of ", c.head_dim,
                                                   " (partial rotary) is not supported"));
  if (auto it = g.metadata().find(key("rope.scaling.type")); it != g.metadata().end()) {
    const std::string type = it->second.text;
    if (type == "linear") {
      c.rope_scaling = RopeScaling::kLinear;
      c.rope_factor = number(key("rope.scaling.factor"), std::nullopt);
      if (!status.ok()) return status;
    } else if (!type.empty() && type != "none") {
      return absl::InvalidArgumentError(absl::StrCat(gguf_path, ": ", key("rope.scaling.type"),
                                                     ": \"", type, "\" is not supported"));
    }
  }
  c.tie_embeddings = g.Find("output.weight") == nullptr;
  c.attention = options.attention.value_or(AttentionConfig{});
  if (absl::Status s = c.Validate(); !s.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(gguf_path, ": gives an invalid model: ", s.message()));

  // GGUF name → (our name, expected shape); then check every tensor before converting any.
  std::map<std::string, std::pair<std::string, Shape>> wanted;
  const int64_t d = c.d_model, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  wanted["token_embd.weight"] = {"model.embed_tokens.weight", {c.vocab_size, d}};
  wanted["output_norm.weight"] = {"model.norm.weight", {d}};
  if (!c.tie_embeddings) wanted["output.weight"] = {"lm_head.weight", {c.vocab_size, d}};
  const std::map<std::string, Shape> layer_shapes = {
      {"attn_norm.weight", {d}},           {"attn_q.weight", {q, d}},
      {"attn_k.weight", {kv, d}},          {"attn_v.weight", {kv, d}},
      {"attn_output.weight", {d, q}},      {"ffn_norm.weight", {d}},
      {"ffn_gate.weight", {c.ffn_dim, d}}, {"ffn_up.weight", {c.ffn_dim, d}},
      {"ffn_down.weight", {d, c.ffn_dim}}};
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (const auto& [gguf_name, ours] : LayerNames())
      wanted[absl::StrCat("blk.", l, ".", gguf_name)] = {
          absl::StrCat("model.layers.", l, ".", ours), layer_shapes.at(gguf_name)};
  std::vector<std::string> problems;
  std::set<std::string> present;
  for (const io::GgufTensorInfo& t : g.tensors()) {
    present.insert(t.name);
    auto it = wanted.find(t.name);
    if (it == wanted.end()) {
      problems.push_back(absl::StrCat("unexpected tensor ", t.name));
    } else if (t.shape != it->second.second) {
      problems.push_back(absl::StrCat(t.name, " is ", ShapeString(t.shape), ", expected ",
                                      ShapeString(it->second.second)));
    }
  }
  for (const auto& [name, ours] : wanted)
    if (!present.count(name)) problems.push_back(absl::StrCat("missing tensor ", name));
  if (!problems.empty())
    return absl::InvalidArgumentError(
        absl::StrCat(gguf_path, ": tensors do not match the metadata (",
                     absl::StrJoin(problems.begin(),
                                   problems.begin() + std::min<size_t>(problems.size(), 8), "; "),
                     problems.size() > 8 ? "; ..." : "", ")"));

  HfImportResult result;
  result.config = c;
  std::map<std::string, int64_t> type_counts;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [gguf_name, ours] : wanted) {
    absl::StatusOr<Tensor> t = g.Dequantize(gguf_name);
    if (!t.ok()) return t.status();
    Tensor w = *t;
    const bool is_q = ours.first.find("q_proj") != std::string::npos;
    if (is_q || ours.first.find("k_proj") != std::string::npos)
      w = UnpermuteRows(w, is_q ? c.n_heads : c.n_kv_heads);
    tensors.emplace_back(ours.first, w);
    ++type_counts[io::GgufFile::TypeName(g.Find(gguf_name)->type)];
  }
  std::vector<std::string> types;
  for (const auto& [type, n] : type_counts) types.push_back(absl::StrCat(n, " ", type));
  result.notes.push_back(absl::StrCat("dequantized to f32: ", absl::StrJoin(types, ", ")));
  result.notes.push_back(
      "the tokenizer is not converted from GGUF: use the model's tokenizer.json or .model");
  if (absl::Status s = WriteImportedModel(c, std::move(tensors), gguf_path,
                                          absl::StrCat(gguf_path, " (GGUF v", g.version(), ")"),
                                          out_dir, options, &result);
      !s.ok())
    return s;
  return result;
}

}  // namespace

absl::StatusOr<HfImportResult> ImportGgufCheckpoint(const std::string& gguf_path,
                                                    const std::string& out_dir,
                                                    const HfImportOptions& options) {
  // Metadata strings and tensor names may appear in the error: it stays one line.
  absl::StatusOr<HfImportResult> result = Import(gguf_path, out_dir, options);
  if (!result.ok()) return PrintableStatus(result.status());
  return result;
}

}  // namespace fam
