#include "models/fam/hf_import.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "framework/autograd/node.h"
#include "framework/core/hash.h"
#include "framework/core/rng.h"
#include "framework/data/tokenizer.h"
#include "framework/io/atomic_file.h"
#include "framework/io/safetensors.h"
#include "framework/ops/ops.h"

namespace fam {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kFamEmbeddings[] = "model.fam.embeddings";

// FORMATS.md names and shapes of a model's weights, in FORMATS.md order.
std::vector<std::pair<std::string, Shape>> ExpectedWeights(const ModelConfig& c) {
  const int64_t d = c.d_model, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  std::vector<std::pair<std::string, Shape>> out = {
      {"model.embed_tokens.weight", {c.vocab_size, d}}};
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    auto linear = [&](const std::string& name, int64_t rows, int64_t cols, bool bias) {
      out.push_back({p + name + ".weight", {rows, cols}});
      if (bias) out.push_back({p + name + ".bias", {rows}});
    };
    out.push_back({p + "input_layernorm.weight", {d}});
    linear("self_attn.q_proj", q, d, c.qkv_bias);
    linear("self_attn.k_proj", kv, d, c.qkv_bias);
    linear("self_attn.v_proj", kv, d, c.qkv_bias);
    linear("self_attn.o_proj", d, q, c.o_bias);
    out.push_back({p + "post_attention_layernorm.weight", {d}});
    if (c.sandwich_norms) {
      out.push_back({p + "pre_feedforward_layernorm.weight", {d}});
      out.push_back({p + "post_feedforward_layernorm.weight", {d}});
    }
    linear("mlp.gate_proj", c.ffn_dim, d, c.mlp_bias);
    linear("mlp.up_proj", c.ffn_dim, d, c.mlp_bias);
    linear("mlp.down_proj", d, c.ffn_dim, c.mlp_bias);
  }
  out.push_back({"model.norm.weight", {d}});
  if (!c.tie_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, d}});
  return out;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

absl::Status WriteImportedModel(const ModelConfig& c,
                                std::vector<std::pair<std::string, Tensor>> tensors,
                                const std::string& source, const std::string& description,
                                const std::string& out_dir, const HfImportOptions& options,
                                HfImportResult* result) {
  const int64_t f = c.fam_rows();
  bool has_prompt = false;
  const Tensor* table = nullptr;
  for (const auto& [name, t] : tensors) {
    has_prompt |= name == kFamEmbeddings;
    if (name == "model.embed_tokens.weight") table = &t;
  }
  if (!has_prompt && f > 0) {
    Tensor prompt = Tensor::Empty({f, c.d_model}, DType::kF32);
    if (options.fam_init == FamInit::kNormal) {
      Generator gen(options.seed, ParameterNameHash(kFamEmbeddings));
      gen.FillNormal(prompt, 0.0, c.init_std);
      result->notes.push_back(
          absl::StrCat("model.fam.embeddings: N(0, ", c.init_std, "^2), seed ", options.seed));
    } else {
      if (options.fam_init_start >= c.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat("fam_init_start: ", options.fam_init_start,
                                                       " is outside the vocabulary [0, ",
                                                       c.vocab_size, ")"));
      FAM_CHECK(table != nullptr, "import: no model.embed_tokens.weight");
      const int64_t start = options.fam_init_start >= 0 ? options.fam_init_start : c.vocab_size / 2;
      std::vector<int64_t> ids(f);
      for (int64_t r = 0; r < f; ++r) ids[r] = (start + r) % c.vocab_size;
      NoGradGuard no_grad;
      prompt = ops::Embedding(ops::Cast(*table, DType::kF32), Tensor::FromInts(ids, {f}));
      // Rows shaped like the layers' inputs: Gemma scales its embeddings by sqrt(d_model).
      if (c.embedding_scale) prompt = ops::Scale(prompt, std::sqrt(static_cast<double>(c.d_model)));
      result->notes.push_back(
          absl::StrCat("model.fam.embeddings: embeddings of token ids ", ids[0], "..", ids[f - 1]));
    }
    tensors.emplace_back(kFamEmbeddings, prompt);
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(out_dir, ": cannot create: ", ec.message()));
  result->config = c;
  result->weights = (fs::path(out_dir) / "model.safetensors").string();
  result->model_yaml = (fs::path(out_dir) / "model.yaml").string();
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"producer", "famtrain import"}, {"source", source}};
  if (absl::Status s = io::WriteSafetensors(result->weights, tensors, meta, options.dtype); !s.ok())
    return s;
  const std::string yaml =
      ModelConfigYaml(c, absl::StrCat("Imported by `fam import` from ", description,
                                      ".\nWeights: model.safetensors next to this file."));
  return io::WriteFileAtomic(result->model_yaml, yaml);
}

absl::StatusOr<HfImportResult> ImportHfCheckpoint(const std::string& hf_dir,
                                                  const std::string& out_dir,
                                                  const HfImportOptions& options) {
  HfImportResult result;
  const fs::path dir(hf_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return absl::NotFoundError(absl::StrCat(hf_dir, ": not a directory"));
  absl::StatusOr<Json> hf = ReadJsonObject((dir / "config.json").string());
  if (!hf.ok()) return hf.status();
  absl::StatusOr<ModelConfig> config =
      ModelConfigFromHf(*hf, (dir / "config.json").string(), options.attention, &result.notes);
  if (!config.ok()) return config.status();
  result.config = *config;
  const ModelConfig& c = result.config;

  // Which file holds each tensor.
  std::map<std::string, std::string> where;  // tensor → file name
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    absl::StatusOr<Json> index = ReadJsonObject(index_path.string());
    if (!index.ok()) return index.status();
    if (!index->contains("weight_map") || !index->at("weight_map").is_object())
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map: missing"));
    for (auto it = index->at("weight_map").begin(); it != index->at("weight_map").end(); ++it) {
      if (!it.value().is_string())
        return absl::InvalidArgumentError(
            absl::StrCat(index_path.string(), ": weight_map.", it.key(), ": expected a file name"));
      where[it.key()] = it.value().get<std::string>();
    }
  } else if (fs::exists(dir / "model.safetensors", ec)) {
    absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> single =
        io::SafetensorsFile::Open((dir / "model.safetensors").string());
    if (!single.ok()) return single.status();
    for (const std::string& name : (*single)->names()) where[name] = "model.safetensors";
  } else {
    return absl::NotFoundError(
        absl::StrCat(hf_dir,
                     ": no model.safetensors or model.safetensors.index.json (PyTorch .bin "
                     "checkpoints are not read: convert them to safetensors first)"));
  }
  std::map<std::string, std::unique_ptr<io::SafetensorsFile>> files;
  for (const auto& [name, file] : where) {
    if (files.count(file)) continue;
    if (file.find('/') != std::string::npos || file.empty() || file[0] == '.')
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map.", name,
                                                     ": bad file name \"", file, "\""));
    absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> f =
        io::SafetensorsFile::Open((dir / file).string());
    if (!f.ok()) return f.status();
    files[file] = std::move(*f);
  }

  // Check every tensor before writing anything.
  std::vector<std::string> missing, misshaped, unexpected, ignored;
  std::set<std::string> expected_names;
  for (const auto& [name, shape] : ExpectedWeights(c)) {
    expected_names.insert(name);
    auto it = where.find(name);
    if (it == where.end()) {
      missing.push_back(name);
      continue;
    }
    const io::SafetensorsFile& f = *files.at(it->second);
    absl::StatusOr<io::SafetensorsTensorInfo> info = f.Info(name);
    if (!info.ok())
      return absl::InvalidArgumentError(absl::StrCat(
          f.path(), ": tensor ", name, " is listed in the index but not stored in this file"));
    if (info->shape != shape || !IsFloating(info->dtype))
      misshaped.push_back(absl::StrCat(name, " ", io::SafetensorsDTypeName(info->dtype),
                                       ShapeString(info->shape), " (expected ", ShapeString(shape),
                                       ")"));
  }
  // A prompt stored in the checkpoint (one exported by `fam export`) is kept when it fits.
  bool stored_prompt = false;
  if (where.count(kFamEmbeddings)) {
    absl::StatusOr<io::SafetensorsTensorInfo> info =
        files.at(where.at(kFamEmbeddings))->Info(kFamEmbeddings);
    stored_prompt = info.ok() && c.fam_rows() > 0 && IsFloating(info->dtype) &&
                    info->shape == Shape{c.fam_rows(), c.d_model};
  }
  for (const auto& [name, file] : where) {
    if (expected_names.count(name) || (stored_prompt && name == kFamEmbeddings)) continue;
    if (EndsWith(name, ".rotary_emb.inv_freq") || name == kFamEmbeddings ||
        (c.tie_embeddings && name == "lm_head.weight"))
      ignored.push_back(name);
    else
      unexpected.push_back(name);
  }
  if (!missing.empty() || !misshaped.empty() || !unexpected.empty()) {
    std::vector<std::string> parts;
    if (!missing.empty()) parts.push_back(absl::StrCat("missing: ", absl::StrJoin(missing, ", ")));
    if (!misshaped.empty())
      parts.push_back(absl::StrCat("wrong shape or dtype: ", absl::StrJoin(misshaped, ", ")));
    if (!unexpected.empty())
      parts.push_back(absl::StrCat("unexpected (unsupported architecture?): ",
                                   absl::StrJoin(unexpected, ", ")));
    return absl::InvalidArgumentError(absl::StrCat(hf_dir, ": weights do not match config.json (",
                                                   absl::StrJoin(parts, "; "), ")"));
  }
  if (!ignored.empty())
    result.notes.push_back(absl::StrCat("tensors ignored: ", absl::StrJoin(ignored, ", ")));

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, shape] : ExpectedWeights(c)) {
    absl::StatusOr<Tensor> t = files.at(where.at(name))->Load(name);  // zero-copy
    if (!t.ok()) return t.status();
    tensors.emplace_back(name, *t);
  }
  if (stored_prompt) {
    absl::StatusOr<Tensor> t = files.at(where.at(kFamEmbeddings))->Load(kFamEmbeddings);
    if (!t.ok()) return t.status();
    tensors.emplace_back(kFamEmbeddings, *t);
    result.notes.push_back("model.fam.embeddings: taken from the checkpoint");
  }
  if (absl::Status s = WriteImportedModel(
          c, std::move(tensors), hf_dir,
          absl::StrCat(hf_dir, " (", hf->value("model_type", ""), ")"), out_dir, options, &result);
      !s.ok())
    return s;
  // The tokenizer travels with the weights: the one the model loads (tokenizer.json first, else
  // tokenizer.model), with its companion file.
  if (const std::string tokenizer = data::FindTokenizerFile(hf_dir); !tokenizer.empty()) {
    absl::StatusOr<std::string> copied = data::CopyTokenizer(tokenizer, out_dir);
    if (!copied.ok()) return copied.status();
    result.notes.push_back(absl::StrCat("copied ", tokenizer, " to ", *copied));
  }
  return result;
}

}  // namespace fam
