#include "trainers/pretrain.h"

#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/core/rng.h"
#include "framework/data/loader.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "framework/metrics/metrics.h"
#include "framework/ops/ops.h"
#include "framework/optim/adafactor.h"
#include "framework/optim/adamw.h"
#include "framework/optim/grad_clip.h"
#include "framework/optim/schedule.h"
#include "models/fam/model.h"
#include "yaml-cpp/yaml.h"

#ifdef FAM_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
#endif

namespace fam {
namespace {

namespace fs = std::filesystem;

// Philox streams of the trainer's random draws (keyed by step and sample, so resume is exact).
constexpr uint64_t kStreamPositionOffset = 0x5057000000000001ull;
constexpr uint64_t kStreamStatePassing = 0x5057000000000002ull;

// Set by SIGTERM/SIGINT; the loop checkpoints and exits at the end of the current step.
std::atomic<int> g_stop_signal{0};
extern "C" void OnStopSignal(int sig) { g_stop_signal.store(sig); }

bool IsNormOrEmbedding(const std::string& name, bool* is_norm) {
  *is_norm = name.find("layernorm") != std::string::npos || name == "model.norm.weight";
  return *is_norm || name == "model.embed_tokens.weight" || name == "lm_head.weight" ||
         name == "model.fam.embeddings";
}

std::vector<NamedParameter> TrainableParameters(const FamModel& model, const OptimizerConfig& o) {
  std::vector<NamedParameter> params;
  for (auto& [name, t] : model.NamedParameters()) {
    bool is_norm = false;
    bool special = IsNormOrEmbedding(name, &is_norm);
    bool decay = !special || (is_norm ? o.decay_norms : o.decay_embeddings);
    params.push_back({name, t, decay});
  }
  return params;
}

std::unique_ptr<Optimizer> MakeOptimizer(const OptimizerConfig& o,
                                         std::vector<NamedParameter> params) {
  if (o.type == OptimizerType::kAdafactor) {
    AdafactorOptions a;
    a.beta1 = o.beta1;
    a.beta2 = o.beta2;
    a.weight_decay = o.weight_decay;
    a.factored = o.adafactor.factored;
    a.clip_threshold = o.adafactor.clip_threshold;
    return std::make_unique<Adafactor>(std::move(params), a);
  }
  AdamWOptions a;
  a.beta1 = o.beta1;
  a.beta2 = o.beta2;
  a.eps = o.eps;
  a.weight_decay = o.weight_decay;
  return std::make_unique<AdamW>(std::move(params), a);
}

// Flattens a YAML document into "a.b.c" → scalar text, for logging config changes on resume.
void Flatten(const YAML::Node& node, const std::string& prefix, std::map<std::string, std::string>* out) {
  if (node.IsMap()) {
    for (const auto& kv : node)
      Flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), out);
  } else if (node.IsSequence()) {
    YAML::Emitter e;
    e << YAML::Flow << node;
    (*out)[prefix] = e.c_str();
  } else if (node.IsScalar()) {
    (*out)[prefix] = node.as<std::string>();
  }
}

std::vector<std::string> ChangedKeys(const std::string& old_yaml, const std::string& new_yaml) {
  std::map<std::string, std::string> a, b;
  try {
    Flatten(YAML::Load(old_yaml), "", &a);
    Flatten(YAML::Load(new_yaml), "", &b);
  } catch (const std::exception&) {
    return {"(previous config.yaml unreadable)"};
  }
  std::vector<std::string> changed;
  for (auto& [k, v] : b)
    if (!a.count(k) || a[k] != v) changed.push_back(k);
  for (auto& [k, v] : a)
    if (!b.count(k)) changed.push_back(k);
  return changed;
}

class Trainer {
 public:
  explicit Trainer(const RunConfig& config) : config_(config) {}

  absl::StatusOr<TrainResult> Run();

 private:
  absl::Status Setup();
  absl::Status MaybeResume();
  absl::Status SaveCheckpoint(bool final_save);
  absl::StatusOr<double> Validate();
  // One optimizer step; returns false in *applied when it was skipped (non-finite loss/grads).
  absl::Status TrainStep(double* loss, double* grad_norm, bool* applied);

  RunConfig config_;
  std::string run_dir_;
  std::unique_ptr<FamModel> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<NamedParameter> params_;
  data::DataLoader train_;
  std::vector<data::Batch> val_batches_;
  std::unique_ptr<io::CheckpointManager> checkpoints_;
  MetricsWriter metrics_;
  ScheduleOptions schedule_;

  int64_t step_ = 0;  // optimizer steps completed
  int64_t tokens_seen_ = 0;
  int consecutive_skips_ = 0;
  double elapsed_before_ = 0;   // training seconds of earlier runs of this job (resume)
  std::vector<Tensor> kept_state_;  // Random State Passing: per-layer [1, F, d], no gradient
  TrainResult result_;
};

absl::Status Trainer::Setup() {
  const TrainerConfig& t = config_.trainer;
  if (t.threads > 0) {
    omp_set_num_threads(static_cast<int>(t.threads));
#ifdef FAM_HAVE_OPENBLAS
    openblas_set_num_threads(static_cast<int>(t.threads));
#endif
  }
  if (t.device != DeviceType::kCPU) {
    std::string why;
    if (!DeviceAvailable(Device::CUDA(0), &why))
      return absl::FailedPreconditionError(absl::StrCat("trainer.device: cuda is unavailable: ", why));
  }
  run_dir_ = (fs::path(config_.run_dir) / config_.name).string();
  std::error_code ec;
  fs::create_directories(fs::path(run_dir_) / "checkpoints", ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(run_dir_, ": cannot create run directory: ", ec.message()));
  result_.run_dir = run_dir_;

  // Data first: a bad shard should fail before any time is spent on the model.
  absl::StatusOr<std::vector<std::string>> train_shards = data::ExpandShardGlob(config_.data.train);
  if (!train_shards.ok()) return train_shards.status();
  data::LoaderOptions lo;
  lo.shards = *train_shards;
  lo.seq_len = t.seq_len;
  lo.global_batch = t.global_batch;
  lo.micro_batch = t.micro_batch;
  lo.seed = t.seed;
  lo.shuffle = config_.data.shuffle;
  lo.max_vocab_size = config_.model.vocab_size;
  absl::StatusOr<data::DataLoader> train = data::DataLoader::Open(lo);
  if (!train.ok()) return train.status();
  train_ = std::move(*train);
  if (!config_.data.val.empty() && t.eval_interval >= 0) {
    absl::StatusOr<std::vector<std::string>> val_shards = data::ExpandShardGlob(config_.data.val);
    if (!val_shards.ok()) return val_shards.status();
    data::LoaderOptions vo = lo;
    vo.shards = *val_shards;
    vo.shuffle = false;
    vo.global_batch = t.micro_batch;
    absl::StatusOr<data::DataLoader> val = data::DataLoader::Open(vo);
    if (!val.ok()) return val.status();
    absl::StatusOr<std::vector<data::Batch>> batches = val->ValBatches(t.eval_batches);
    if (!batches.ok()) return batches.status();
    val_batches_ = std::move(*batches);
  }

  model_ = std::make_unique<FamModel>(config_.model);
  model_->InitializeWeights(t.seed);
  params_ = TrainableParameters(*model_, config_.optimizer);
  optimizer_ = MakeOptimizer(config_.optimizer, params_);

  schedule_.type = config_.schedule.type;
  schedule_.lr = config_.optimizer.lr;
  schedule_.warmup_steps = config_.schedule.warmup_steps;
  schedule_.decay_steps = config_.schedule.decay_steps > 0 ? config_.schedule.decay_steps : t.steps;
  schedule_.min_lr_ratio = config_.schedule.min_lr_ratio;
  if (absl::Status s = ValidateSchedule(schedule_); !s.ok()) return s;

  io::CheckpointOptions co;
  co.dir = (fs::path(run_dir_) / "checkpoints").string();
  co.keep_last = static_cast<int>(config_.checkpoint.keep_last);
  co.keep_every = config_.checkpoint.keep_every;
  checkpoints_ = std::make_unique<io::CheckpointManager>(co);
  return metrics_.Open((fs::path(run_dir_) / "metrics.jsonl").string());
}

absl::Status Trainer::MaybeResume() {
  const std::string& mode = config_.checkpoint.resume;
  std::string path;
  if (mode == "never") return absl::OkStatus();
  if (mode == "auto") {
    absl::StatusOr<std::string> latest = checkpoints_->LatestValid(
        [](const std::string& warning) { std::cerr << "warning: " << warning << "\n"; });
    if (absl::IsNotFound(latest.status())) return absl::OkStatus();
    if (!latest.ok()) return latest.status();
    path = *latest;
  } else {
    path = mode;
  }
  absl::StatusOr<io::LoadedCheckpoint> ckpt = io::LoadCheckpoint(path);
  if (!ckpt.ok()) return ckpt.status();
  if (ckpt->config_hash != ConfigHash(config_))
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": the model config changed since this checkpoint was written (model section hash ",
        ckpt->config_hash, " vs ", ConfigHash(config_), "); start a new run name or restore the model config"));
  NoGradGuard no_grad;
  for (auto& [name, t] : model_->NamedParameters()) {
    auto it = ckpt->model.find(name);
    if (it == ckpt->model.end()) return absl::DataLossError(absl::StrCat(path, ": model tensor ", name, " missing"));
    if (it->second.shape() != t.shape())
      return absl::FailedPreconditionError(absl::StrCat(path, ": ", name, " has shape ", ShapeString(it->second.shape()), ", model expects ", ShapeString(t.shape())));
    ops::CopyInPlace(t, it->second);
  }
  if (absl::Status s = optimizer_->LoadStateTensors(ckpt->optimizer); !s.ok()) return s;
  const nlohmann::json& ts = ckpt->trainer_state;
  try {
    step_ = ts.at("step").get<int64_t>();
    tokens_seen_ = ts.at("tokens_seen").get<int64_t>();
    consecutive_skips_ = ts.at("consecutive_skips").get<int>();
    elapsed_before_ = ts.at("elapsed_s").get<double>();
    data::LoaderState ls;
    ls.epoch = ts.at("loader").at("epoch").get<int64_t>();
    ls.samples_consumed = ts.at("loader").at("samples_consumed").get<int64_t>();
    if (absl::Status s = train_.Restore(ls); !s.ok()) return s;
    if (ts.contains("first_val_loss")) result_.first_val_loss = ts.at("first_val_loss").get<double>();
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(path, "/trainer_state.json: ", e.what()));
  }
  kept_state_.clear();
  for (int64_t l = 0; l < config_.model.n_layers; ++l) {
    auto it = ckpt->extra.find(absl::StrCat("fam_state.layers.", l));
    if (it == ckpt->extra.end()) break;
    kept_state_.push_back(ops::Clone(it->second));
  }
  // Log what changed in the config (allowed: LR, steps, logging ...; the model was checked above).
  std::string old_yaml;
  if (absl::StatusOr<std::string> text = io::ReadFile((fs::path(run_dir_) / "config.yaml").string()); text.ok())
    old_yaml = *text;
  std::vector<std::string> changed = ChangedKeys(old_yaml, RunConfigToYaml(config_));
  nlohmann::json event = {{"kind", "event"}, {"step", step_}, {"event", "resume"}, {"checkpoint", path},
                          {"config_changed", changed}};
  metrics_.Write(event);
  std::cout << "resumed from " << path << " at step " << step_;
  if (!changed.empty()) std::cout << " (config changed: " << nlohmann::json(changed).dump() << ")";
  std::cout << "\n";
  return absl::OkStatus();
}

absl::Status Trainer::SaveCheckpoint(bool final_save) {
  io::CheckpointData data;
  data.step = step_;
  data.world_size = 1;
  data.config_hash = ConfigHash(config_);
  data.model = model_->NamedParameters();
  data.optimizer = optimizer_->StateTensors();
  for (size_t l = 0; l < kept_state_.size(); ++l)
    data.extra.emplace_back(absl::StrCat("fam_state.layers.", l), kept_state_[l]);
  data::LoaderState ls = train_.state();
  data.trainer_state = {{"step", step_},
                        {"tokens_seen", tokens_seen_},
                        {"consecutive_skips", consecutive_skips_},
                        {"elapsed_s", elapsed_before_},
                        {"loader", {{"epoch", ls.epoch}, {"samples_consumed", ls.samples_consumed}}},
                        {"seed", config_.trainer.seed},
                        {"lr", LearningRate(schedule_, step_)}};
  if (result_.first_val_loss >= 0) data.trainer_state["first_val_loss"] = result_.first_val_loss;
  absl::Status s = config_.checkpoint.async && !final_save ? checkpoints_->SaveAsync(std::move(data))
                                                            : checkpoints_->Save(data);
  if (!s.ok()) return s;
  if (final_save) {
    if (absl::Status w = checkpoints_->Wait(); !w.ok()) return w;
  }
  result_.last_checkpoint = (fs::path(run_dir_) / "checkpoints" / io::CheckpointDirName(step_)).string();
  metrics_.Write({{"kind", "event"}, {"step", step_}, {"event", "checkpoint"}, {"path", result_.last_checkpoint}});
  return absl::OkStatus();
}

absl::StatusOr<double> Trainer::Validate() {
  if (val_batches_.empty()) return -1.0;
  NoGradGuard no_grad;
  double total = 0;
  for (const data::Batch& b : val_batches_) {
    ForwardResult out = model_->Forward(b.inputs);
    total += model_->Loss(out.logits, b.targets).item();
  }
  return total / static_cast<double>(val_batches_.size());
}

absl::Status Trainer::TrainStep(double* loss_out, double* grad_norm, bool* applied) {
  const TrainerConfig& t = config_.trainer;
  const FamTrainingConfig& tricks = config_.model.training;
  const bool is_fam = config_.model.fam_rows() > 0;
  absl::StatusOr<std::vector<data::Batch>> micro = train_.NextStep();
  if (!micro.ok()) return micro.status();
  optimizer_->ZeroGrad();
  const double accum = static_cast<double>(micro->size());
  // Random State Passing: one draw per step decides whether every sequence starts from the kept state.
  const bool pass_state = is_fam && !kept_state_.empty() && tricks.state_passing_prob > 0 &&
                          UniformAt(t.seed, kStreamStatePassing, step_) < tricks.state_passing_prob;
  double loss_sum = 0;
  std::vector<Tensor> new_state;
  int64_t sample = 0;
  for (size_t m = 0; m < micro->size(); ++m) {
    const data::Batch& batch = (*micro)[m];
    ForwardOptions fo;
    const int64_t b = batch.inputs.size(0);
    if (tricks.random_position_offset) {
      const uint64_t range = static_cast<uint64_t>(std::floor(2 * M_PI * config_.model.rope_base));
      for (int64_t i = 0; i < b; ++i, ++sample) {
        const uint64_t key = static_cast<uint64_t>(step_ * t.global_batch + sample);
        const bool zero = UniformAt(t.seed, kStreamPositionOffset, 2 * key) < 0.5f;
        const uint64_t bits = Philox(t.seed, kStreamPositionOffset, (uint64_t{1} << 40) + key)[0];
        fo.position_offsets.push_back(zero ? 0 : static_cast<int64_t>(bits % range));
      }
    }
    if (pass_state) fo.initial_state = kept_state_;
    ForwardResult out = model_->Forward(batch.inputs, fo);
    Tensor loss = model_->Loss(out.logits, batch.targets);
    ops::Scale(loss, 1.0 / accum).backward();
    loss_sum += loss.item();
    if (m == 0 && is_fam) {
      new_state.clear();
      for (const Tensor& s : out.final_state) new_state.push_back(ops::Clone(ops::Slice(s, 0, 0, 1).detach()));
    }
    tokens_seen_ += batch.inputs.numel();
  }
  *loss_out = loss_sum / accum;
  const bool finite = std::isfinite(*loss_out) && AllGradsFinite(params_);
  if (!finite) {
    *applied = false;
    *grad_norm = NAN;
    ++consecutive_skips_;
    optimizer_->ZeroGrad();
    metrics_.Write({{"kind", "event"}, {"step", step_ + 1}, {"event", "skipped_step"},
                    {"reason", "non-finite loss or gradient"}, {"loss", std::isfinite(*loss_out) ? *loss_out : -1.0},
                    {"consecutive", consecutive_skips_}});
    std::cerr << "\nwarning: step " << step_ + 1 << " skipped: non-finite loss or gradient (" << consecutive_skips_
              << " in a row)\n";
    if (consecutive_skips_ >= t.max_consecutive_skips)
      return absl::AbortedError(absl::StrCat("stopping: ", consecutive_skips_,
                                             " consecutive steps with a non-finite loss or gradient (trainer.max_consecutive_skips = ",
                                             t.max_consecutive_skips, "); lower optimizer.lr or check the data"));
    ++step_;  // the data was consumed: the step counts, the weights stay
    return absl::OkStatus();
  }
  consecutive_skips_ = 0;
  *grad_norm = ClipGradNorm(params_, config_.optimizer.grad_clip);
  optimizer_->Step(LearningRate(schedule_, step_));
  optimizer_->ZeroGrad();
  if (is_fam) kept_state_ = new_state;
  *applied = true;
  ++step_;
  return absl::OkStatus();
}

absl::StatusOr<TrainResult> Trainer::Run() {
  if (absl::Status s = Setup(); !s.ok()) return s;
  if (absl::Status s = MaybeResume(); !s.ok()) return s;
  if (absl::Status s = io::WriteFileAtomic((fs::path(run_dir_) / "config.yaml").string(), RunConfigToYaml(config_)); !s.ok())
    return s;
  const TrainerConfig& t = config_.trainer;
  std::cout << absl::StrFormat("run %s: %s, %d parameters, %d train windows of %d tokens, %d steps x %d sequences\n",
                               run_dir_, AttentionTypeName(config_.model.attention.type), model_->ParameterCount(),
                               train_.NumWindows(), t.seq_len, t.steps, t.global_batch);
  g_stop_signal.store(0);
  auto previous_term = std::signal(SIGTERM, OnStopSignal);
  auto previous_int = std::signal(SIGINT, OnStopSignal);

  if (step_ == 0 && !val_batches_.empty()) {
    absl::StatusOr<double> v = Validate();
    if (!v.ok()) return v.status();
    result_.first_val_loss = *v;
    result_.last_val_loss = *v;
    metrics_.Write({{"kind", "eval"}, {"step", 0}, {"val_loss", *v}, {"val_ppl", std::exp(*v)}});
    std::cout << absl::StrFormat("step 0: val loss %.4f (ppl %.1f)\n", *v, std::exp(*v));
  }
  Stopwatch clock;
  Stopwatch interval_clock;
  int64_t interval_tokens = tokens_seen_;
  double interval_loss = 0;
  int interval_steps = 0;
  absl::Status status;
  while (step_ < t.steps) {
    double loss = 0, grad_norm = 0;
    bool applied = false;
    status = TrainStep(&loss, &grad_norm, &applied);
    if (!status.ok()) break;
    if (applied) {
      interval_loss += loss;
      ++interval_steps;
      result_.last_train_loss = loss;
    }
    const bool last = step_ == t.steps;
    if (interval_steps > 0 && (step_ % t.log_interval == 0 || last)) {
      const double seconds = interval_clock.Seconds();
      const double tps = (tokens_seen_ - interval_tokens) / std::max(seconds, 1e-9);
      const double avg = interval_loss / interval_steps;
      const double lr = LearningRate(schedule_, step_ - 1);
      metrics_.Write({{"kind", "train"}, {"step", step_}, {"loss", avg}, {"lr", lr}, {"grad_norm", grad_norm},
                      {"tokens", tokens_seen_}, {"tokens_per_s", tps}, {"mfu", nullptr},
                      {"elapsed_s", elapsed_before_ + clock.Seconds()}});
      ProgressFields p;
      p.step = step_;
      p.total_steps = t.steps;
      p.loss = avg;
      p.lr = lr;
      p.grad_norm = grad_norm;
      p.tokens_per_s = tps;
      p.eta_s = seconds / interval_steps * static_cast<double>(t.steps - step_);
      PrintProgress(p, last);
      interval_clock.Reset();
      interval_tokens = tokens_seen_;
      interval_loss = 0;
      interval_steps = 0;
    }
    if (!val_batches_.empty() && ((t.eval_interval > 0 && step_ % t.eval_interval == 0) || last)) {
      absl::StatusOr<double> v = Validate();
      if (!v.ok()) {
        status = v.status();
        break;
      }
      result_.last_val_loss = *v;
      if (result_.first_val_loss < 0) result_.first_val_loss = *v;
      metrics_.Write({{"kind", "eval"}, {"step", step_}, {"val_loss", *v}, {"val_ppl", std::exp(*v)}});
      std::cout << absl::StrFormat("%sstep %d: val loss %.4f (ppl %.1f)\n", isatty(1) ? "\n" : "", step_, *v, std::exp(*v));
    }
    const int sig = g_stop_signal.load();
    if (sig != 0) {
      std::cout << "\nreceived " << (sig == SIGTERM ? "SIGTERM" : "SIGINT") << ": saving a checkpoint at step "
                << step_ << " and exiting\n";
      result_.interrupted = true;
      break;
    }
    if (!last && config_.checkpoint.interval > 0 && step_ % config_.checkpoint.interval == 0) {
      elapsed_before_ += clock.Seconds();
      clock.Reset();
      if (absl::Status s = SaveCheckpoint(false); !s.ok()) {
        status = s;
        break;
      }
    }
  }
  std::signal(SIGTERM, previous_term);
  std::signal(SIGINT, previous_int);
  if (!status.ok()) {
    checkpoints_->Wait().IgnoreError();
    return status;  // the last saved checkpoint stays as it was
  }
  elapsed_before_ += clock.Seconds();
  if (absl::Status s = SaveCheckpoint(true); !s.ok()) return s;
  result_.final_step = step_;
  return result_;
}

}  // namespace

absl::StatusOr<TrainResult> RunTraining(const RunConfig& config) {
  Trainer trainer(config);
  absl::StatusOr<TrainResult> result;
  absl::Status s = CatchToStatus([&] { result = trainer.Run(); });
  if (!s.ok()) return s;
  return result;
}

}  // namespace fam
