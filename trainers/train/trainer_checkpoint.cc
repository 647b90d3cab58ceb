// Checkpoints of a training run: resume (model through the ModelSetup, optimizer state, trainer
// state, the kept FAM state), collective saves (unsharded by rank 0, or sharded by owner under
// ZeRO), and the end-of-run export of the model setup (LoRA adapters).
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "framework/autograd/node.h"
#include "framework/dist/collective_helpers.h"
#include "framework/io/atomic_file.h"
#include "framework/io/config_tree.h"
#include "framework/ops/ops.h"
#include "trainers/train/portable_checkpoint.h"
#include "trainers/train/trainer.h"
#include "trainers/train/trainer_progress.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

// `tensors` with every bf16 parameter replaced by its f32 master copy from `optimizer` (matched by
// storage and offset), and any other bf16 tensor converted to f32: what checkpoints and adapter
// files of bf16 runs store, so they hold full-precision weights.
std::vector<std::pair<std::string, Tensor>> WithMasterWeights(
    std::vector<std::pair<std::string, Tensor>> tensors, const Optimizer& optimizer) {
  std::map<std::pair<const Storage*, int64_t>, Tensor> masters;
  for (auto& [param, master] : optimizer.MasterWeights())
    masters[{param.storage().get(), param.offset()}] = master;
  NoGradGuard no_grad;
  for (auto& [name, t] : tensors) {
    if (t.dtype() != DType::kBF16) continue;
    auto it = masters.find({t.storage().get(), t.offset()});
    t = it != masters.end() ? it->second : ops::Cast(t, DType::kF32);
  }
  return tensors;
}

// A resume with another trainer.precision than the checkpoint's: the checkpoint's model weights
// are the f32 masters of a bf16 run, so a bf16 run takes its missing "<param>.master" entries from
// them, and an f32 run drops the master entries it has no use for.
void AdaptMasterState(const std::vector<NamedParameter>& params,
                      const std::map<std::string, Tensor>& weights,
                      std::map<std::string, Tensor>* state) {
  for (const NamedParameter& p : params) {
    const std::string name = absl::StrCat(p.name, ".", kMasterSlot);
    if (p.param.dtype() != DType::kBF16) {
      state->erase(name);
    } else if (!state->count(name)) {
      if (auto it = weights.find(p.name); it != weights.end()) (*state)[name] = it->second;
    }
  }
}

// The "a.b.c" keys whose values differ between two run configs (YAML text), for the resume log.
std::vector<std::string> ChangedKeys(const std::string& old_yaml, const std::string& new_yaml) {
  auto flat = [](const std::string& text) -> std::optional<std::map<std::string, std::string>> {
    absl::StatusOr<ConfigNode> tree = ParseYamlText(text, "config.yaml");
    if (!tree.ok()) return std::nullopt;
    std::map<std::string, std::string> out;
    for (absl::string_view line : absl::StrSplit(FlattenYaml(*tree), '\n')) {
      if (line.empty()) continue;
      const size_t eq = line.find('=');
      out[std::string(line.substr(0, eq))] =
          eq == absl::string_view::npos ? "" : std::string(line.substr(eq + 1));
    }
    return out;
  };
  std::optional<std::map<std::string, std::string>> a = flat(old_yaml), b = flat(new_yaml);
  if (!a || !b) return {"(previous config.yaml unreadable)"};
  std::vector<std::string> changed;
  for (auto& [k, v] : *b)
    if (!a->count(k) || a->at(k) != v) changed.push_back(k);
  for (auto& [k, v] : *a)
    if (!b->count(k)) changed.push_back(k);
  return changed;
}

}  // namespace

absl::Status Trainer::MaybeResume() {
  const std::string& mode = config_.checkpoint.resume;
  std::string path;
  if (mode == "never") return absl::OkStatus();
  // With several ranks the sha256 verification is split between them (a collective: nothing may
  // return before it); each rank then maps the files and touches only what it keeps.
  const io::ShardGroup group = CheckpointGroup();
  const bool split = world_ > 1;
  if (mode == "auto") {
    absl::StatusOr<std::string> latest = checkpoints_->LatestValid(
        [this](const std::string& warning) {
          if (is_root()) std::cerr << "warning: " << warning << "\n";
        },
        split ? &group : nullptr);
    if (absl::IsNotFound(latest.status())) return absl::OkStatus();
    if (!latest.ok()) return latest.status();
    path = *latest;
  } else {
    path = mode;
    if (split) {
      if (absl::Status s = io::VerifyCheckpoint(path, group); !s.ok()) return s;
    }
  }
  absl::StatusOr<io::LoadedCheckpoint> ckpt = io::LoadCheckpoint(path, /*verify=*/!split);
  if (!ckpt.ok()) return ckpt.status();
  if (ckpt->config_hash != ConfigHash(config_))
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": the model config changed since this checkpoint was written (model section hash ",
        ckpt->config_hash, " vs ", ConfigHash(config_),
        "); start a new run name or restore the model config"));
  if (absl::Status s = setup_.RestoreCheckpoint(*model_, *ckpt); !s.ok()) return s;
  std::map<std::string, Tensor> optimizer_state = ckpt->optimizer;
  AdaptMasterState(params_, ckpt->model, &optimizer_state);
  if (absl::Status s = optimizer_->LoadStateTensors(optimizer_state); !s.ok()) return s;
  absl::StatusOr<TrainerProgress> progress = ParseTrainerProgress(ckpt->trainer_state, path);
  if (!progress.ok()) return progress.status();
  step_ = progress->step;
  tokens_seen_ = progress->tokens_seen;
  consecutive_skips_ = progress->consecutive_skips;
  elapsed_before_ = progress->elapsed_s;
  if (absl::Status s = train_.Restore(progress->loader); !s.ok()) return s;
  if (progress->first_val_loss >= 0) result_.first_val_loss = progress->first_val_loss;
  if (progress->last_val_loss >= 0) result_.last_val_loss = progress->last_val_loss;
  if (progress->last_train_loss >= 0) result_.last_train_loss = progress->last_train_loss;
  tricks_->RestoreCheckpointTensors(ckpt->extra, *model_, config_.trainer.precision);
  LogResume(path, *ckpt);
  return absl::OkStatus();
}

// Rank 0 records the resume in metrics.jsonl and says what changed in the config.
void Trainer::LogResume(const std::string& path, const io::LoadedCheckpoint& checkpoint) {
  if (!is_root()) return;  // rank 0 logs the resume
  // Log what changed in the config (allowed: LR, steps, logging ...; the model was checked above).
  // Against the config the checkpoint carries (that of the run which wrote it), else the run
  // directory's (checkpoints written before they carried one).
  std::string old_yaml;
  for (const fs::path& file :
       {fs::path(path) / kCheckpointRunConfig, fs::path(run_dir_) / "config.yaml"}) {
    if (absl::StatusOr<std::string> text = io::ReadFile(file.string()); text.ok()) {
      old_yaml = *text;
      break;
    }
  }
  std::vector<std::string> changed = ChangedKeys(old_yaml, RunConfigToYaml(config_));
  nlohmann::json event = {{"kind", "event"},
                          {"step", step_},
                          {"event", "resume"},
                          {"checkpoint", path},
                          {"config_changed", changed}};
  metrics_.Write(event);
  std::cout << "resumed from " << path << " at step " << step_;
  if (checkpoint.world_size != world_)
    std::cout << " (saved with " << checkpoint.world_size << " ranks, now " << world_ << ")";
  if (!changed.empty()) std::cout << " (config changed: " << nlohmann::json(changed).dump() << ")";
  std::cout << "\n";
}

io::ShardGroup Trainer::CheckpointGroup() const {
  io::ShardGroup group;
  group.rank = rank_;
  group.size = world_;
  group.all_gather = [comm = comm_](const std::string& mine) {
    return dist::AllGatherStrings(*comm, mine);
  };
  return group;
}

absl::Status Trainer::SaveCheckpoint(bool final_save) {
  // ZeRO-3: the writers read every parameter; gathered for the save, released after it.
  GatherFullWeights();
  struct ReleaseAfterSave {
    Trainer* trainer;
    ~ReleaseAfterSave() { trainer->ReleaseFullWeights(); }
  } release_after_save{this};
  absl::Status s;
  Stopwatch save_clock;
  if (sharded_checkpoints()) {
    // Every rank writes what it owns, in parallel (synchronously: the save is collective).
    // optimizer_->StateTensors() of a sharded optimizer holds the owned parameters' state; the
    // step counter is kept from rank 0 only.
    s = CatchToStatus([&] {
      io::CheckpointData data = MakeCheckpointData(/*owned_only=*/true);
      data.optimizer = optimizer_->StateTensors();
      if (!is_root()) {
        std::erase_if(data.optimizer,
                      [](const auto& entry) { return entry.first == kOptimizerStepName; });
      }
      const ZeroStage stage = config_.distributed.zero;
      data.sharding = stage == ZeroStage::kZero1   ? "zero1"
                      : stage == ZeroStage::kZero2 ? "zero2"
                                                   : "zero3";
      ThrowIfError(checkpoints_->SaveSharded(data, CheckpointGroup()));
    });
    agreed_error_ = !s.ok();  // SaveSharded returns the same status on every rank
    if (!s.ok()) return s;
  } else if (is_root()) {
    s = CatchToStatus([&] {
      io::CheckpointData data = MakeCheckpointData(/*owned_only=*/false);
      data.optimizer = optimizer_->StateTensors();
      ThrowIfError(WriteCheckpoint(std::move(data), final_save));
    });
  }
  if (world_ > 1 && !sharded_checkpoints()) {
    s = dist::AgreeOnStatus(*comm_, s, absl::StrCat("to save the checkpoint of step ", step_));
    agreed_error_ = !s.ok();
  }
  if (!s.ok()) return s;
  result_.last_checkpoint =
      (fs::path(run_dir_) / "checkpoints" / io::CheckpointDirName(step_)).string();
  metrics_.Write({{"kind", "event"},
                  {"step", step_},
                  {"event", "checkpoint"},
                  {"path", result_.last_checkpoint},
                  {"sharded", sharded_checkpoints()},
                  {"save_s", save_clock.Seconds()}});  // asynchronous: the snapshot only
  return absl::OkStatus();
}

io::CheckpointData Trainer::MakeCheckpointData(bool owned_only) const {
  io::CheckpointData data;
  data.step = step_;
  data.world_size = world_;
  data.config_hash = ConfigHash(config_);
  data.extra = tricks_->CheckpointTensors();
  data::LoaderState ls = train_.state();
  data.trainer_state = {
      {"step", step_},
      {"tokens_seen", tokens_seen_},
      {"consecutive_skips", consecutive_skips_},
      {"elapsed_s", elapsed_before_},
      {"loader", {{"epoch", ls.epoch}, {"samples_consumed", ls.samples_consumed}}},
      {"seed", config_.trainer.seed},
      {"lr", LearningRate(schedule_, step_)}};
  if (result_.first_val_loss >= 0) data.trainer_state["first_val_loss"] = result_.first_val_loss;
  if (result_.last_val_loss >= 0) data.trainer_state["last_val_loss"] = result_.last_val_loss;
  if (result_.last_train_loss >= 0) data.trainer_state["last_train_loss"] = result_.last_train_loss;
  setup_.FillCheckpoint(*model_, &data);  // every parameter, or adapters only (LoRA)
  if (is_root())
    AddRunFiles(RunConfigToYaml(config_), ConfigHash(config_), config_.data.tokenizer,
                tokenizer_bytes_, &data, tokenizer_config_bytes_);
  if (owned_only) {
    // The tensors of parameters other ranks own are dropped (matched by storage and offset, which
    // stay the same when ZeRO-3 releases the memory; the model's names and the trainable
    // parameters' may differ); anything else stays with rank 0.
    std::map<std::pair<const Storage*, int64_t>, size_t> index;
    for (size_t i = 0; i < params_.size(); ++i)
      index[{params_[i].param.storage().get(), params_[i].param.offset()}] = i;
    std::erase_if(data.model, [&](const auto& entry) {
      auto it = index.find({entry.second.storage().get(), entry.second.offset()});
      return it == index.end() ? !is_root() : !OwnsTrainable(it->second);
    });
  }
  // bf16 runs: the weights are saved in f32, from the master copies (the owned ones under ZeRO).
  data.model = WithMasterWeights(std::move(data.model), *optimizer_);
  return data;
}

absl::Status Trainer::WriteCheckpoint(io::CheckpointData data, bool final_save) {
  absl::Status s = config_.checkpoint.async && !final_save
                       ? checkpoints_->SaveAsync(std::move(data))
                       : checkpoints_->Save(data);
  if (!s.ok()) return s;
  if (final_save) {
    if (absl::Status w = checkpoints_->Wait(); !w.ok()) return w;
  }
  return absl::OkStatus();
}

absl::Status Trainer::WriteFinalExport() {
  if (!setup_.HasFinalExport(*model_)) return absl::OkStatus();
  // Under ZeRO-3 every rank gathers first (a collective): the exported tensors and the base
  // weights a LoRA fingerprint hashes are spread over the ranks.
  GatherFullWeights();
  // bf16 runs write the f32 master copies ("<name>.master" optimizer state); under ZeRO (1, 2 or
  // 3) they are spread over the ranks and gathered on rank 0 first (a collective).
  std::vector<std::pair<std::string, Tensor>> tensors;
  if (is_root()) tensors = setup_.FinalExportTensors(*model_);
  if (config_.trainer.precision == DType::kBF16) {
    std::map<std::string, Tensor> state;
    for (auto& [name, tensor] : zero_ ? zero_->GatherStateTensors(0) : optimizer_->StateTensors())
      state[name] = tensor;
    NoGradGuard no_grad;
    for (auto& [name, tensor] : tensors) {
      auto it = state.find(absl::StrCat(name, ".", kMasterSlot));
      tensor = it != state.end() ? it->second : ops::Cast(tensor, DType::kF32);
    }
  }
  absl::Status saved = absl::OkStatus();
  if (is_root()) saved = setup_.WriteFinalExport(*model_, run_dir_, &tensors);
  ReleaseFullWeights();
  return saved;
}

}  // namespace fam
