#include "models/fam/lora.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "framework/autograd/node.h"
#include "framework/core/dtype.h"
#include "framework/core/hash.h"
#include "framework/io/safetensors.h"
#include "framework/nn/named_tensors.h"
#include "framework/ops/ops.h"

namespace fam {
namespace {

constexpr char kFormat[] = "famtrain-lora";
constexpr char kFamEmbeddings[] = "model.fam.embeddings";
const std::vector<std::string>& AttentionLeaves() {
  static const std::vector<std::string> leaves = {"q_proj", "k_proj", "v_proj", "o_proj"};
  return leaves;
}
const std::vector<std::string>& MlpLeaves() {
  static const std::vector<std::string> leaves = {"gate_proj", "up_proj", "down_proj"};
  return leaves;
}

uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
uint64_t Finalise(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 33);
}
// One round of a MurmurHash3-style 64-bit hash over a word.
uint64_t HashWord(uint64_t h, uint64_t word) {
  word *= 0x87c37b91114253d5ull;
  word = Rotl(word, 31);
  word *= 0x4cf5ad432745937full;
  h ^= word;
  return Rotl(h, 27) * 5 + 0x52dce729;
}

std::string Hex(uint64_t h) { return absl::StrFormat("%016x", h); }

// Glob match: '*' any run of characters (dots included), '?' one character.
bool Glob(const std::string& pattern, const std::string& text) {
  size_t p = 0, t = 0, star = std::string::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string Leaf(const std::string& name) {
  size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

// Whether `pattern` selects the projection `name` (LoraConfig::targets).
bool PatternSelects(const std::string& pattern, const std::string& name) {
  const std::string leaf = Leaf(name);
  auto in = [&](const std::vector<std::string>& leaves) {
    return std::find(leaves.begin(), leaves.end(), leaf) != leaves.end();
  };
  if (pattern == "attention") return in(AttentionLeaves());
  if (pattern == "mlp") return in(MlpLeaves());
  if (pattern == "all") return in(AttentionLeaves()) || in(MlpLeaves());
  for (size_t start = 0;;) {
    if (Glob(pattern, name.substr(start))) return true;
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) return false;
    start = dot + 1;
  }
}

// The projections adapters may attach to: every nn::Linear inside the decoder layers (lm_head's
// forward uses its weight directly, so an adapter there would never run).
std::vector<std::pair<std::string, nn::Linear*>> Projections(FamModel& model) {
  std::vector<std::pair<std::string, nn::Linear*>> out;
  for (auto& [name, module] : model.NamedModules()) {
    auto* linear = dynamic_cast<nn::Linear*>(module);
    if (linear != nullptr && name.rfind("model.layers.", 0) == 0) out.emplace_back(name, linear);
  }
  return out;
}

std::vector<std::pair<std::string, const nn::Linear*>> Adapted(const FamModel& model) {
  std::vector<std::pair<std::string, const nn::Linear*>> out;
  for (auto& [name, module] : model.NamedModules()) {
    auto* linear = dynamic_cast<const nn::Linear*>(module);
    if (linear != nullptr && linear->has_lora()) out.emplace_back(name, linear);
  }
  return out;
}

void SetAllRequiresGrad(FamModel& model) {
  for (auto& [name, t] : model.NamedParameters()) {
    Tensor handle = t;
    handle.set_requires_grad(true);
  }
}

// Removes every adapter without merging and unfreezes the model (undoes AttachLora).
void RemoveLora(FamModel& model) {
  for (auto& [name, linear] : Projections(model)) linear->DetachLora();
  SetAllRequiresGrad(model);
}

std::string BoolText(bool value) { return value ? "true" : "false"; }

}  // namespace

bool IsLoraParameterName(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".lora_A.weight") || ends_with(".lora_B.weight");
}

bool HasLora(const FamModel& model) { return !Adapted(model).empty(); }

absl::StatusOr<std::vector<std::string>> AttachLora(FamModel& model, const LoraConfig& config) {
  absl::Status options_ok = CatchToStatus([&] { nn::CheckLoraOptions(config.options()); });
  if (!options_ok.ok()) return options_ok;
  if (HasLora(model)) return absl::FailedPreconditionError("lora: the model has adapters already");
  if (config.targets.empty())
    return absl::InvalidArgumentError("lora.targets: empty (default: [attention, mlp])");
  std::vector<std::pair<std::string, nn::Linear*>> candidates = Projections(model);
  std::vector<bool> chosen(candidates.size(), false);
  for (const std::string& pattern : config.targets) {
    bool any = false;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (PatternSelects(pattern, candidates[i].first)) chosen[i] = any = true;
    }
    if (!any) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lora.targets: pattern \"", pattern, "\" matches no projection (projections are named ",
          "like model.layers.0.self_attn.q_proj and model.layers.0.mlp.up_proj; groups: ",
          "attention, mlp, all)"));
    }
  }
  std::vector<std::string> names;
  absl::Status status = CatchToStatus([&] {
    for (auto& [name, t] : model.NamedParameters()) {
      Tensor handle = t;
      handle.set_requires_grad(config.train_fam && name == kFamEmbeddings);
    }
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (!chosen[i]) continue;
      candidates[i].second->AttachLora(config.options(), config.seed,
                                       ParameterNameHash(candidates[i].first));
      names.push_back(candidates[i].first);
    }
  });
  if (!status.ok()) {
    RemoveLora(model);
    return status;
  }
  return names;
}

LoraConfig AttachedLoraConfig(const FamModel& model) {
  auto adapted = Adapted(model);
  FAM_CHECK(!adapted.empty(), "lora: the model has no adapters");
  LoraConfig config;
  const nn::LoraOptions& o = adapted.front().second->lora_options();
  config.rank = o.rank;
  config.alpha = o.alpha;
  config.dropout = o.dropout;
  Tensor fam = model.FindParameter(kFamEmbeddings);
  config.train_fam = fam.defined() && fam.requires_grad();
  // Targets: the projection names (q_proj, ...) when every layer has the same set, else the
  // full module names.
  const int64_t layers = model.config().n_layers;
  std::vector<std::string> leaves;
  bool uniform = true;
  for (const auto* group : {&AttentionLeaves(), &MlpLeaves()}) {
    for (const std::string& leaf : *group) {
      int64_t count = 0;
      for (auto& [name, linear] : adapted) count += Leaf(name) == leaf;
      if (count == layers)
        leaves.push_back(leaf);
      else if (count != 0)
        uniform = false;
    }
  }
  config.targets.clear();
  if (uniform && !leaves.empty()) {
    config.targets = leaves;
  } else {
    for (auto& [name, linear] : adapted) config.targets.push_back(name);
  }
  return config;
}

std::vector<std::pair<std::string, Tensor>> LoraTrainableParameters(const FamModel& model) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, t] : model.NamedParameters())
    if (t.requires_grad()) out.emplace_back(name, t);
  return out;
}

void SetLoraDropout(FamModel& model, bool training, uint64_t seed, uint64_t key) {
  for (auto& [name, linear] : Projections(model))
    if (linear->has_lora()) linear->SetLoraDropout(training, seed, key);
}

void MergeLora(FamModel& model) {
  for (auto& [name, linear] : Projections(model)) linear->MergeLora();
  SetAllRequiresGrad(model);
}

BaseFingerprint FingerprintBase(const FamModel& model, const std::set<std::string>& exclude) {
  std::vector<std::pair<std::string, Tensor>> base;
  for (auto& [name, t] : model.NamedParameters())
    if (!IsLoraParameterName(name) && !exclude.count(name)) base.emplace_back(name, t);
  std::sort(base.begin(), base.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  uint64_t layout = kParameterNameBasis, content = 0x6a09e667f3bcc908ull;
  BaseFingerprint fp;
  for (auto& [name, t] : base) {
    const std::string line = absl::StrCat(name, ":", ShapeString(t.shape()), "\n");
    layout = Fnv1a64(line, layout);
    content = HashWord(content, ParameterNameHash(line));
    NoGradGuard no_grad;
    std::vector<float> values =
        (t.device().is_cpu() ? t : ops::To(t.detach(), Device::CPU())).ToFloats();
    const size_t n = values.size();
    for (size_t i = 0; i < n; i += 4) {
      uint64_t word = 0;
      for (size_t j = 0; j < 4 && i + j < n; ++j)
        word |= static_cast<uint64_t>(BF16::FromFloat(values[i + j])) << (16 * j);
      content = HashWord(content, word);
    }
    content = HashWord(content, n);
    ++fp.tensors;
    fp.elements += static_cast<int64_t>(n);
  }
  fp.layout = Hex(Finalise(layout));
  fp.content = Hex(Finalise(content));
  return fp;
}

std::map<std::string, std::string> LoraMetadata(const FamModel& model,
                                                const std::string& base_label) {
  LoraConfig config = AttachedLoraConfig(model);
  std::set<std::string> stored;
  for (auto& [name, t] : LoraTrainableParameters(model))
    if (!IsLoraParameterName(name)) stored.insert(name);
  BaseFingerprint fp = FingerprintBase(model, stored);
  std::map<std::string, std::string> meta = {
      {"format", kFormat},
      {"producer", "famtrain"},
      {"lora.rank", absl::StrCat(config.rank)},
      {"lora.alpha", absl::StrFormat("%.17g", config.alpha)},
      {"lora.dropout", absl::StrFormat("%.17g", config.dropout)},
      {"lora.targets", absl::StrJoin(config.targets, ",")},
      {"lora.train_fam", BoolText(config.train_fam)},
      {"base.layout", fp.layout},
      {"base.content", fp.content},
      {"base.tensors", absl::StrCat(fp.tensors)},
      {"base.elements", absl::StrCat(fp.elements)}};
  if (!base_label.empty()) meta["base.label"] = base_label;
  return meta;
}

absl::StatusOr<LoraConfig> LoraConfigFromMetadata(const std::map<std::string, std::string>& meta,
                                                  const std::string& source) {
  auto get = [&](const std::string& key) -> absl::StatusOr<std::string> {
    auto it = meta.find(key);
    if (it == meta.end())
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": not a famtrain LoRA adapter (metadata key \"", key, "\" missing)"));
    return it->second;
  };
  auto bad = [&](const std::string& key, const std::string& value) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": metadata ", key, " has a bad value \"", value, "\""));
  };
  absl::StatusOr<std::string> format = get("format");
  if (!format.ok()) return format.status();
  if (*format != kFormat)
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": not a famtrain LoRA adapter (metadata format is \"", *format, "\")"));
  LoraConfig config;
  for (const char* key :
       {"lora.rank", "lora.alpha", "lora.dropout", "lora.targets", "lora.train_fam"}) {
    absl::StatusOr<std::string> value = get(key);
    if (!value.ok()) return value.status();
    const std::string k = key;
    bool ok = true;
    if (k == "lora.rank") ok = absl::SimpleAtoi(*value, &config.rank) && config.rank >= 1;
    if (k == "lora.alpha") ok = absl::SimpleAtod(*value, &config.alpha);
    if (k == "lora.dropout") ok = absl::SimpleAtod(*value, &config.dropout);
    if (k == "lora.train_fam") ok = *value == "true" || *value == "false";
    if (k == "lora.train_fam") config.train_fam = *value == "true";
    if (k == "lora.targets") {
      config.targets = absl::StrSplit(*value, ',', absl::SkipEmpty());
      ok = !config.targets.empty();
    }
    if (!ok) return bad(k, *value);
  }
  return config;
}

absl::Status SaveLoraAdapters(const FamModel& model, const std::string& path,
                              const std::string& base_label,
                              const std::vector<std::pair<std::string, Tensor>>* tensors) {
  std::map<std::string, std::string> meta;
  absl::Status status = CatchToStatus([&] { meta = LoraMetadata(model, base_label); });
  if (!status.ok()) return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
  std::vector<std::pair<std::string, Tensor>> trainable = LoraTrainableParameters(model);
  if (tensors != nullptr) {
    bool match = tensors->size() == trainable.size();
    for (size_t i = 0; match && i < trainable.size(); ++i) {
      match = (*tensors)[i].first == trainable[i].first &&
              (*tensors)[i].second.shape() == trainable[i].second.shape();
    }
    if (!match) {
      return absl::InternalError(
          absl::StrCat(path, ": the adapter tensors given do not match the trainable parameters"));
    }
    trainable = *tensors;
  }
  return io::WriteSafetensors(path, trainable, meta);
}

absl::Status LoadLoraAdapters(FamModel& model, const std::string& path) {
  absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> file = io::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  std::map<std::string, Tensor> tensors;
  for (const std::string& name : (*file)->names()) {
    absl::StatusOr<Tensor> t = (*file)->Load(name);
    if (!t.ok()) return t.status();
    tensors[name] = *t;
  }
  return LoadLoraTensors(model, tensors, (*file)->metadata(), path);
}

absl::Status LoadLoraTensors(FamModel& model, const std::map<std::string, Tensor>& tensors,
                             const std::map<std::string, std::string>& meta,
                             const std::string& source) {
  absl::StatusOr<LoraConfig> config = LoraConfigFromMetadata(meta, source);
  if (!config.ok()) return config.status();
  // The base check comes first: adapters on the wrong base are refused before anything changes.
  std::set<std::string> stored;
  for (auto& [name, t] : tensors)
    if (!IsLoraParameterName(name)) stored.insert(name);
  BaseFingerprint fp = FingerprintBase(model, stored);
  const std::string want_layout = meta.count("base.layout") ? meta.at("base.layout") : "";
  const std::string want_content = meta.count("base.content") ? meta.at("base.content") : "";
  if (fp.layout != want_layout || fp.content != want_content) {
    const std::string label = meta.count("base.label") ? meta.at("base.label") : "(unnamed)";
    return absl::FailedPreconditionError(absl::StrCat(
        source, ": these adapters belong to base ", label, " (fingerprint ", want_layout, "/",
        want_content, ", ", meta.count("base.tensors") ? meta.at("base.tensors") : "?",
        " tensors) but the loaded base weights have fingerprint ", fp.layout, "/", fp.content, " (",
        fp.tensors, " tensors): ",
        fp.layout != want_layout ? "a different architecture or set of tensors"
                                 : "the same architecture with different weight values",
        "; load the base weights the adapters were trained on"));
  }
  const bool attached_here = !HasLora(model);
  if (attached_here) {
    absl::StatusOr<std::vector<std::string>> names = AttachLora(model, *config);
    if (!names.ok())
      return absl::Status(names.status().code(),
                          absl::StrCat(source, ": ", names.status().message()));
  } else {
    LoraConfig have = AttachedLoraConfig(model);
    if (have.rank != config->rank || have.alpha != config->alpha ||
        have.targets != config->targets) {
      return absl::FailedPreconditionError(absl::StrCat(
          source, ": adapters of rank ", config->rank, ", alpha ", config->alpha, " on [",
          absl::StrJoin(config->targets, ","), "] do not fit the attached ones (rank ", have.rank,
          ", alpha ", have.alpha, " on [", absl::StrJoin(have.targets, ","), "])"));
    }
  }
  auto fail = [&](absl::Status status) {
    if (attached_here) RemoveLora(model);
    return status;
  };
  std::vector<std::pair<std::string, Tensor>> targets;
  for (auto& [name, t] : model.NamedParameters()) {
    if (IsLoraParameterName(name) || stored.count(name)) targets.emplace_back(name, t);
  }
  nn::CopyNamedTensorsOptions options;
  options.mismatch = "adapter tensors do not match the model";
  options.require_floating = true;
  if (absl::Status status = nn::CopyNamedTensors(targets, tensors, source, options); !status.ok())
    return fail(status);
  return absl::OkStatus();
}

}  // namespace fam
