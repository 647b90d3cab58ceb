#include "trainers/pretrain.h"

#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/core/host_memory.h"
#include "framework/core/rng.h"
#include "framework/data/loader.h"
#include "framework/dist/collective_helpers.h"
#include "framework/dist/communicator.h"
#include "framework/dist/env.h"
#include "framework/dist/grad_reducer.h"
#include "framework/dist/sharded_parameters.h"
#include "framework/dist/zero_optimizer.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "framework/metrics/metrics.h"
#include "framework/ops/ops.h"
#include "framework/optim/adafactor.h"
#include "framework/optim/adamw.h"
#include "framework/optim/grad_clip.h"
#include "framework/optim/schedule.h"
#include "models/fam/model.h"
#include "trainers/cli.h"
#include "trainers/finetune.h"
#include "trainers/peak_flops.h"
#include "trainers/portable_checkpoint.h"
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

// Bytes of the accumulated gradient of parameter `p` (in GradDType: f32 for a bf16 parameter).
int64_t GradientBytes(const Tensor& p) {
  return p.numel() * static_cast<int64_t>(DTypeSize(GradDType(p.dtype())));
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
void Flatten(const YAML::Node& node, const std::string& prefix,
             std::map<std::string, std::string>* out) {
  if (node.IsMap()) {
    for (const auto& kv : node)
      Flatten(
          kv.second,
          prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(),
          out);
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

// ZeRO-3: the model's layer hooks drive the unit gathers (units = decoder layers, then the root).
class ZeroLayerHooks : public LayerHooks {
 public:
  explicit ZeroLayerHooks(dist::ShardedParameters* sharding) : sharding_(sharding) {}
  void BeforeLayer(int64_t layer) override { sharding_->BeforeUnit(static_cast<int>(layer)); }
  Tensor AfterLayer(int64_t layer, const Tensor& output) override {
    return sharding_->AfterUnit(static_cast<int>(layer), output);
  }

 private:
  dist::ShardedParameters* sharding_;
};

class Trainer {
 public:
  explicit Trainer(const RunConfig& config) : config_(config) {}

  absl::StatusOr<TrainResult> Run();
  // Ends every rank of a data-parallel job after an error this rank alone may have hit (returns
  // when the job has one rank, or when the error is known to be the same on every rank).
  void AbortIfDistributed(const absl::Status& status);

 private:
  absl::Status Setup();
  absl::Status SetupCommunicator();
  absl::Status SetupRun();
  absl::Status CheckHostMemory() const;
  void ReportDistributed();
  absl::Status MaybeResume();
  absl::Status SaveCheckpoint(bool final_save);  // collective
  // Everything but the optimizer state; model: every tensor, or (owned_only) those this rank owns.
  io::CheckpointData MakeCheckpointData(bool owned_only) const;
  absl::Status WriteCheckpoint(io::CheckpointData data, bool final_save);  // unsharded: rank 0
  // ZeRO with several ranks: each rank writes the weights and optimizer state it owns.
  bool sharded_checkpoints() const {
    return world_ > 1 && config_.distributed.zero != ZeroStage::kNone;
  }
  io::ShardGroup CheckpointGroup() const;
  absl::StatusOr<double> Validate();
  // One optimizer step; returns false in *applied when it was skipped (non-finite loss/grads).
  absl::Status TrainStep(double* loss, double* grad_norm, bool* applied);

  bool is_root() const { return rank_ == 0; }

  RunConfig config_;
  std::string run_dir_;
  // Data parallelism (world_ == 1: comm_ is the local communicator and there is no reducer).
  std::shared_ptr<dist::Communicator> comm_;
  std::unique_ptr<dist::GradReducer> reducer_;
  dist::Zero1Optimizer* zero_ = nullptr;  // optimizer_ when distributed.zero = zero1/2/3
  // ZeRO-2/3: gradient (and ZeRO-3 parameter) sharding by units; hooks_ when parameters are
  // sharded.
  std::unique_ptr<dist::ShardedParameters> sharding_;
  std::unique_ptr<ZeroLayerHooks> hooks_;
  void SetupSharding();
  void ReportSharding(const std::vector<int64_t>& optimizer_bytes);
  // Whether this rank owns (updates, checkpoints) trainable parameter params_[i] (ZeRO 1/2/3).
  bool OwnsTrainable(size_t i) const {
    return sharding_ ? sharding_->trainable_owners()[i] == rank_ : reducer_->owns(i);
  }
  // ZeRO-3: every parameter gathered around evaluation and checkpoint writes (collective).
  void GatherFullWeights();
  void ReleaseFullWeights();
  int rank_ = 0, world_ = 1;
  bool has_val_ = false;       // validation data on some rank
  int stop_signal_ = 0;        // SIGTERM/SIGINT seen by some rank, agreed at each step
  bool agreed_error_ = false;  // the failing status is the same on every rank
  // Gradient communication per step (GradReducer stats), summed since the last log line and over
  // the whole run.
  struct CommTotals {
    double comm_s = 0, wait_s = 0;
    int steps = 0;
  };
  CommTotals interval_comm_, run_comm_;
  std::unique_ptr<FamModel> model_;
  nlohmann::json lora_state_;  // adapter-only checkpoints: LoRA settings + base fingerprint
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
  double elapsed_before_ = 0;       // training seconds of earlier runs of this job (resume)
  std::vector<Tensor> kept_state_;  // Random State Passing: per-layer [1, F, d], no gradient
  std::string tokenizer_bytes_;     // data.tokenizer, copied into every checkpoint
  std::optional<PeakFlops> peak_;   // of this rank's device; none on the CPU (no MFU then)
  // Model FLOPs utilisation at `tokens_per_s` (all ranks): attention over the attended span only,
  // recomputation not counted.
  double Mfu(double tokens_per_s) const {
    return tokens_per_s * config_.model.TrainingFlopsPerToken(config_.trainer.seq_len) /
           (peak_->flops_per_s * world_);
  }
  TrainResult result_;
};

absl::Status Trainer::SetupCommunicator() {
  const DistributedConfig& d = config_.distributed;
  dist::CommOptions co;
  co.backend = d.backend == DistBackend::kMpi    ? dist::Backend::kMpi
               : d.backend == DistBackend::kNccl ? dist::Backend::kNccl
                                                 : dist::Backend::kAuto;
  co.device = config_.trainer.device == DeviceType::kCPU ? Device::CPU() : Device::CUDA(0);
  co.timeout_s = d.timeout_s;
  absl::StatusOr<std::shared_ptr<dist::Communicator>> comm = dist::CreateCommunicator(co);
  if (!comm.ok()) return comm.status();
  comm_ = *comm;
  rank_ = comm_->rank();
  world_ = comm_->world_size();
  result_.rank = rank_;
  result_.world_size = world_;
  if (world_ > 1 && !is_root()) {
    // Only rank 0 reports on stdout; errors still reach stderr from every rank.
    std::cout.rdbuf(nullptr);
  }
  return absl::OkStatus();
}

absl::Status Trainer::Setup() {
  if (absl::Status s = SetupCommunicator(); !s.ok()) return s;
  // From here every rank has a communicator: set-up errors are agreed by all ranks, so that a rank
  // that failed (say, on an unreadable shard) does not leave the others waiting.
  absl::Status s = CatchToStatus([&] { ThrowIfError(SetupRun()); });
  s = dist::AgreeOnStatus(*comm_, s, "to set up the run");
  if (!s.ok()) return s;
  // Agreed separately: resuming may run collectives (the sharded verification).
  s = CatchToStatus([&] { ThrowIfError(MaybeResume()); });
  s = dist::AgreeOnStatus(*comm_, s, "to resume");
  if (!s.ok()) return s;
  if (world_ > 1) {
    // Same weights everywhere (initialised from the same seed, or loaded from the same checkpoint;
    // the broadcast makes it independent of file systems and thread counts).
    std::vector<Tensor> weights;
    for (const NamedParameter& p : params_) weights.push_back(p.param);
    // bf16 runs without ZeRO: every rank holds every master copy (same list on every rank).
    if (!zero_)
      for (auto& [param, master] : optimizer_->MasterWeights()) weights.push_back(master);
    dist::BroadcastTensors(*comm_, weights, 0);
    if (sharding_) sharding_->Shard();  // ZeRO-3: from here each rank keeps its own parameters
    has_val_ = dist::AllReduceInts(*comm_, {static_cast<int64_t>(val_batches_.size())})[0] > 0;
    ReportDistributed();
  } else {
    has_val_ = !val_batches_.empty();
  }
  return absl::OkStatus();
}

// Before anything is allocated: every rank builds the whole model on the host (then moves or
// shards it), and an unsharded pretraining run on the CPU also keeps f32 gradients and the
// optimizer's state there; a run whose parameters alone cannot fit is refused naming the keys.
absl::Status Trainer::CheckHostMemory() const {
  const TrainerConfig& t = config_.trainer;
  absl::StatusOr<dist::DistEnv> env = dist::DiscoverEnv();
  const int local = env.ok() ? std::max(1, env->local_size) : 1;
  double per_value = static_cast<double>(DTypeSize(t.precision));
  std::string purpose;
  if (t.device == DeviceType::kCPU && t.type == TrainerType::kPretrain &&
      config_.distributed.zero == ZeroStage::kNone) {
    const bool adamw = config_.optimizer.type == OptimizerType::kAdamW;
    per_value += 4 + (adamw ? 8 : 0) + (t.precision == DType::kBF16 ? 4 : 0);
    purpose = adamw ? " to train (weights, f32 gradients and AdamW moments)"
                    : " to train (weights and f32 gradients)";
  }
  const double available = static_cast<double>(HostMemoryBytes()) / local;
  const std::string where =
      local > 1 ? absl::StrCat("each of this machine's ", local, " ranks' share of its")
                : "this machine's";
  return config_.model.CheckParametersFit(per_value, available, where, purpose);
}

absl::Status Trainer::SetupRun() {
  if (absl::Status s = CheckHostMemory(); !s.ok()) return s;
  const TrainerConfig& t = config_.trainer;
  int threads = static_cast<int>(t.threads);
  if (threads == 0 && world_ > 1 && std::getenv("OMP_NUM_THREADS") == nullptr) {
    // Ranks on one node share its cores unless told otherwise.
    absl::StatusOr<dist::DistEnv> env = dist::DiscoverEnv();
    const int local = env.ok() ? std::max(1, env->local_size) : 1;
    threads = std::max(1, omp_get_num_procs() / local);
  }
  if (threads > 0) {
    omp_set_num_threads(threads);
#ifdef FAM_HAVE_OPENBLAS
    openblas_set_num_threads(threads);
#endif
  }
  if (t.device != DeviceType::kCPU) {
    std::string why;
    if (!DeviceAvailable(Device::CUDA(0), &why))
      return absl::FailedPreconditionError(
          absl::StrCat("trainer.device: cuda is unavailable: ", why));
  }
  run_dir_ = (fs::path(config_.run_dir) / config_.name).string();
  std::error_code ec;
  fs::create_directories(fs::path(run_dir_) / "checkpoints", ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(run_dir_, ": cannot create run directory: ", ec.message()));
  result_.run_dir = run_dir_;

  // Data first: a bad shard should fail before any time is spent on the model.
  if (absl::Status s = ResolveMicroBatch(&config_, world_); !s.ok()) return s;
  if (is_root()) std::cout << "batch: " << DescribeBatch(t, world_) << "\n";
  if (t.global_batch % (world_ * t.micro_batch) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "trainer.global_batch %d is not a multiple of world size %d x trainer.micro_batch %d: with "
        "%d ranks, each takes global_batch / %d sequences in micro-batches of micro_batch; pick a "
        "global batch divisible by %d (or another -np)",
        t.global_batch, world_, t.micro_batch, world_, world_, world_ * t.micro_batch));
  }
  absl::StatusOr<std::vector<std::string>> train_shards = data::ExpandShardGlob(config_.data.train);
  if (!train_shards.ok()) return train_shards.status();
  data::LoaderOptions lo;
  lo.shards = *train_shards;
  lo.seq_len = t.seq_len;
  lo.global_batch = t.global_batch;
  lo.micro_batch = t.micro_batch;
  lo.world_size = world_;
  lo.rank = rank_;
  lo.seed = t.seed;
  lo.shuffle = config_.data.shuffle;
  lo.max_vocab_size = config_.model.vocab_size;
  lo.role_weights = LoaderRoleWeights(config_);
  absl::StatusOr<data::DataLoader> train = data::DataLoader::Open(lo);
  if (!train.ok()) return train.status();
  train_ = std::move(*train);
  if (!config_.data.val.empty() && t.eval_interval >= 0) {
    absl::StatusOr<std::vector<std::string>> val_shards = data::ExpandShardGlob(config_.data.val);
    if (!val_shards.ok()) return val_shards.status();
    data::LoaderOptions vo = lo;
    vo.shards = *val_shards;
    vo.shuffle = false;
    vo.global_batch = t.micro_batch * world_;
    absl::StatusOr<data::DataLoader> val = data::DataLoader::Open(vo);
    if (!val.ok()) return val.status();
    absl::StatusOr<std::vector<data::Batch>> batches = val->ValBatches(t.eval_batches);
    if (!batches.ok()) return batches.status();
    val_batches_ = std::move(*batches);
  }

  // The tokenizer travels with every checkpoint (trainers/portable_checkpoint.h).
  if (is_root() && !config_.data.tokenizer.empty()) {
    absl::StatusOr<std::string> bytes = io::ReadFile(config_.data.tokenizer);
    if (bytes.ok())
      tokenizer_bytes_ = *std::move(bytes);
    else
      std::cerr << "warning: data.tokenizer: " << bytes.status().message()
                << " (checkpoints will not carry the tokenizer)\n";
  }
  std::vector<std::string> notes;
  absl::StatusOr<std::unique_ptr<FamModel>> model = BuildModelForRun(config_, &notes);
  if (!model.ok()) return model.status();
  model_ = std::move(*model);
  // Built, initialised or loaded (and given its adapters) on the host, then moved to this rank's
  // device: the communicator's (cuda:local_rank under NCCL).
  if (t.device != DeviceType::kCPU) {
    absl::Status moved = CatchToStatus([&] { model_->To(comm_->device()); });
    if (!moved.ok()) return moved;
  }
  result_.device = model_->device();
  peak_ = PeakFlopsFor(result_.device, t.precision);
  if (rank_ == 0)
    for (const std::string& note : notes) std::cout << note << "\n";
  params_ = TrainableParameters(*model_, config_.optimizer);
  lora_state_ = CheckpointLoraState(*model_, config_);
  const bool zero1 = config_.distributed.zero == ZeroStage::kZero1 && world_ > 1;
  const bool zero23 = (config_.distributed.zero == ZeroStage::kZero2 ||
                       config_.distributed.zero == ZeroStage::kZero3) &&
                      world_ > 1;
  if (zero23) {
    SetupSharding();
  } else if (world_ > 1) {
    dist::ReducerOptions ro;
    ro.bucket_bytes =
        std::max<int64_t>(1, static_cast<int64_t>(config_.distributed.bucket_mb * 1024.0 * 1024.0));
    ro.shard = zero1;
    reducer_ = std::make_unique<dist::GradReducer>(comm_, params_, ro);
  }
  if (zero1) {
    const OptimizerConfig o = config_.optimizer;
    auto zero = std::make_unique<dist::Zero1Optimizer>(
        comm_, params_, reducer_->owners(),
        [o](std::vector<NamedParameter> owned) { return MakeOptimizer(o, std::move(owned)); },
        [this] { reducer_->GatherParameters(); });
    zero_ = zero.get();
    optimizer_ = std::move(zero);
  } else if (!zero23) {
    optimizer_ = MakeOptimizer(config_.optimizer, params_);
  }

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
  if (!is_root()) return absl::OkStatus();  // only rank 0 writes metrics
  return metrics_.Open((fs::path(run_dir_) / "metrics.jsonl").string());
}

void Trainer::SetupSharding() {
  // Units: decoder layer l = every parameter under "model.layers.<l>." (LoRA adapters included),
  // the root unit = everything else (embeddings, final norm, lm_head, FAM prompt).
  const int n_layers = static_cast<int>(config_.model.n_layers);
  std::vector<NamedParameter> all;
  std::vector<int> unit_of;
  size_t next_trainable = 0;
  for (auto& [name, t] : model_->NamedParameters()) {
    if (t.requires_grad()) {
      FAM_CHECK(next_trainable < params_.size() && params_[next_trainable].name == name,
                "zero: trainable parameter '", name, "' out of order");
      all.push_back(params_[next_trainable++]);
    } else {
      all.push_back({name, t, false});
    }
    int unit = n_layers;
    if (name.rfind("model.layers.", 0) == 0) unit = std::stoi(name.substr(13));
    unit_of.push_back(unit);
  }
  const bool zero3 = config_.distributed.zero == ZeroStage::kZero3;
  sharding_ = std::make_unique<dist::ShardedParameters>(comm_, std::move(all), std::move(unit_of),
                                                        n_layers + 1, zero3);
  if (zero3) hooks_ = std::make_unique<ZeroLayerHooks>(sharding_.get());
  const OptimizerConfig o = config_.optimizer;
  dist::ShardedParameters* sharding = sharding_.get();
  std::function<void()> gather;
  if (!zero3) gather = [sharding] { sharding->GatherAll(); };  // ZeRO-2: replicate the update
  auto zero = std::make_unique<dist::Zero1Optimizer>(
      comm_, params_, sharding_->trainable_owners(),
      [o](std::vector<NamedParameter> owned) { return MakeOptimizer(o, std::move(owned)); },
      gather);
  zero_ = zero.get();
  optimizer_ = std::move(zero);
}

void Trainer::GatherFullWeights() {
  if (sharding_ && sharding_->shard_parameters()) sharding_->GatherAll();
}

void Trainer::ReleaseFullWeights() {
  if (sharding_ && sharding_->shard_parameters()) sharding_->ReleaseAll();
}

// ZeRO-2/3: what is sharded and the bytes each rank holds between steps (all ranks listed).
void Trainer::ReportSharding(const std::vector<int64_t>& optimizer_bytes) {
  const std::vector<int> owners = sharding_->trainable_owners();
  int64_t grad_bytes = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    if (owners[i] == rank_) grad_bytes += GradientBytes(params_[i].param);
  std::vector<int64_t> params(world_, 0), grads(world_, 0);
  params[rank_] = sharding_->persistent_param_bytes();
  grads[rank_] = grad_bytes;
  params = dist::AllReduceInts(*comm_, params);
  grads = dist::AllReduceInts(*comm_, grads);
  if (!is_root()) return;
  auto list = [&](const std::vector<int64_t>& v) {
    std::string out;
    for (int r = 0; r < world_; ++r)
      absl::StrAppend(&out, r == 0 ? "" : ", ", dist::FormatBytes(static_cast<double>(v[r])));
    return out;
  };
  const bool zero3 = sharding_->shard_parameters();
  absl::StatusOr<dist::DistEnv> env = dist::DiscoverEnv();
  std::cout << absl::StrFormat(
      "distributed: %d ranks (%s, launched by %s, %d threads each), zero: %s (%s sharded by "
      "owner, %d units: one per decoder layer + root)\n"
      "memory per rank (ranks 0..%d): parameters %s%s, gradients %s (owned; + unit buffers in "
      "flight), optimizer state %s\n",
      world_, comm_->backend_name(), env.ok() ? env->launcher : "?", omp_get_max_threads(),
      zero3 ? "zero3" : "zero2",
      zero3 ? "parameters, gradients and optimizer state" : "gradients and optimizer state",
      config_.model.n_layers + 1, world_ - 1, list(params),
      zero3 ? " (+ the gathered root and up to 3 layer units)" : "", list(grads),
      list(optimizer_bytes));
}

void Trainer::ReportDistributed() {
  auto bytes_of = [](const std::vector<std::pair<std::string, Tensor>>& tensors) {
    int64_t n = 0;
    for (const auto& [name, t] : tensors) n += static_cast<int64_t>(t.nbytes());
    return n;
  };
  int64_t param_bytes = 0, grad_bytes = 0;
  for (const NamedParameter& p : params_) {
    param_bytes += static_cast<int64_t>(p.param.nbytes());
    grad_bytes += GradientBytes(p.param);
  }
  std::vector<int64_t> optimizer_bytes(world_, 0);
  optimizer_bytes[rank_] = zero_ ? zero_->LocalStateBytes() : bytes_of(optimizer_->StateTensors());
  optimizer_bytes = dist::AllReduceInts(*comm_, optimizer_bytes);
  if (sharding_) {
    ReportSharding(optimizer_bytes);
    return;
  }
  if (!is_root()) return;
  int64_t total = 0;
  std::string per_rank;
  for (int r = 0; r < world_; ++r) {
    total += optimizer_bytes[r];
    absl::StrAppend(&per_rank, r == 0 ? "" : ", ", dist::FormatBytes(optimizer_bytes[r]));
  }
  absl::StatusOr<dist::DistEnv> env = dist::DiscoverEnv();
  std::cout << absl::StrFormat(
      "distributed: %d ranks (%s, launched by %s, %d threads each), %d gradient buckets of <= %g "
      "MiB, zero: %s\n"
      "memory per rank: parameters %s, gradients %s, communication buffers %s, optimizer state "
      "%s (ranks 0..%d; %s unsharded)\n",
      world_, comm_->backend_name(), env.ok() ? env->launcher : "?", omp_get_max_threads(),
      reducer_->layout().buckets.size(), config_.distributed.bucket_mb, zero_ ? "zero1" : "none",
      dist::FormatBytes(param_bytes), dist::FormatBytes(grad_bytes),
      dist::FormatBytes(reducer_->buffer_bytes()), per_rank, world_ - 1,
      dist::FormatBytes(zero_ ? total : optimizer_bytes[0]));
}

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
  if (absl::Status s = RestoreModelCheckpoint(*model_, *ckpt); !s.ok()) return s;
  std::map<std::string, Tensor> optimizer_state = ckpt->optimizer;
  AdaptMasterState(params_, ckpt->model, &optimizer_state);
  if (absl::Status s = optimizer_->LoadStateTensors(optimizer_state); !s.ok()) return s;
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
    if (ts.contains("first_val_loss"))
      result_.first_val_loss = ts.at("first_val_loss").get<double>();
    if (ts.contains("last_val_loss")) result_.last_val_loss = ts.at("last_val_loss").get<double>();
    if (ts.contains("last_train_loss"))
      result_.last_train_loss = ts.at("last_train_loss").get<double>();
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(path, "/trainer_state.json: ", e.what()));
  }
  kept_state_.clear();
  for (int64_t l = 0; l < config_.model.n_layers; ++l) {
    auto it = ckpt->extra.find(absl::StrCat("fam_state.layers.", l));
    if (it == ckpt->extra.end()) break;
    // In the run's precision (a checkpoint of a run with another trainer.precision is converted).
    const DType dtype = config_.trainer.precision;
    Tensor state = model_->OnDevice(ops::Clone(it->second));
    if (state.dtype() != dtype) state = ops::Cast(state, dtype);
    kept_state_.push_back(state);
  }
  if (!is_root()) return absl::OkStatus();  // rank 0 logs the resume
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
  if (ckpt->world_size != world_)
    std::cout << " (saved with " << ckpt->world_size << " ranks, now " << world_ << ")";
  if (!changed.empty()) std::cout << " (config changed: " << nlohmann::json(changed).dump() << ")";
  std::cout << "\n";
  return absl::OkStatus();
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
  for (size_t l = 0; l < kept_state_.size(); ++l)
    data.extra.emplace_back(absl::StrCat("fam_state.layers.", l), kept_state_[l]);
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
  FillModelCheckpoint(*model_, lora_state_, &data);  // every parameter, or adapters only (LoRA)
  if (is_root())
    AddRunFiles(RunConfigToYaml(config_), ConfigHash(config_), config_.data.tokenizer,
                tokenizer_bytes_, &data);
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

absl::StatusOr<double> Trainer::Validate() {
  if (!has_val_) return -1.0;
  NoGradGuard no_grad;
  double total = 0;
  if (HasLora(*model_)) SetLoraDropout(*model_, false, 0, 0);
  GatherFullWeights();  // ZeRO-3: evaluation sees every parameter
  const int64_t chunk = config_.trainer.loss_chunk_tokens;
  ForwardOptions fo;
  fo.compute_logits = chunk == 0;
  for (const data::Batch& b : val_batches_) {
    ForwardResult out = model_->Forward(b.inputs, fo);
    total += (chunk == 0 ? model_->Loss(out.logits, b.targets, b.weights)
                         : model_->LossFromHidden(out.hidden, b.targets, b.weights, chunk))
                 .item();
  }
  ReleaseFullWeights();
  double count = static_cast<double>(val_batches_.size());
  if (world_ > 1) {
    // Each rank evaluated its share of the validation batches.
    std::vector<double> sums = dist::AllReduceDoubles(*comm_, {total, count});
    total = sums[0];
    count = sums[1];
  }
  return total / count;
}

absl::Status Trainer::TrainStep(double* loss_out, double* grad_norm, bool* applied) {
  const TrainerConfig& t = config_.trainer;
  const FamTrainingConfig& tricks = config_.model.training;
  const bool is_fam = config_.model.fam_rows() > 0;
  absl::StatusOr<std::vector<data::Batch>> micro = train_.NextStep();
  if (!micro.ok()) return micro.status();
  optimizer_->ZeroGrad();
  const double accum = static_cast<double>(micro->size());
  // Loss weights (weight shards): each micro-batch's weighted mean counts by its share of the total
  // weight of the step over every micro-batch and rank (LossWeight), so the gradient is that of
  // one batch holding them all. Without weights every micro-batch weighs 1 (plain averaging).
  std::vector<double> micro_weight(micro->size(), 1.0);
  double step_weight = accum * world_;
  if ((*micro)[0].weights.defined()) {
    step_weight = 0;
    for (size_t m = 0; m < micro->size(); ++m) {
      micro_weight[m] = LossWeight((*micro)[m].targets, (*micro)[m].weights);
      step_weight += micro_weight[m];
    }
    if (world_ > 1) step_weight = dist::AllReduceDoubles(*comm_, {step_weight})[0];
  }
  // Random State Passing: one draw per step decides whether every sequence starts from the kept
  // state.
  const bool pass_state = is_fam && !kept_state_.empty() && tricks.state_passing_prob > 0 &&
                          UniformAt(t.seed, kStreamStatePassing, step_) < tricks.state_passing_prob;
  double loss_sum = 0;
  std::vector<Tensor> new_state;
  // Sequences are numbered across the global batch (rank r holds a contiguous block of them), so
  // the random draws keyed by them do not depend on the world size.
  int64_t sample = rank_ * (t.global_batch / world_);
  for (size_t m = 0; m < micro->size(); ++m) {
    const data::Batch& batch = (*micro)[m];
    ForwardOptions fo;
    fo.recompute = t.recompute;
    fo.compute_logits = t.loss_chunk_tokens == 0;  // else the chunked head computes the loss
    const int64_t b = batch.inputs.size(0);
    if (tricks.random_position_offset) {
      const uint64_t range = static_cast<uint64_t>(std::floor(2 * M_PI * config_.model.rope_base));
      for (int64_t i = 0; i < b; ++i) {
        const uint64_t key = static_cast<uint64_t>(step_ * t.global_batch + sample + i);
        const bool zero = UniformAt(t.seed, kStreamPositionOffset, 2 * key) < 0.5f;
        const uint64_t bits = Philox(t.seed, kStreamPositionOffset, (uint64_t{1} << 40) + key)[0];
        fo.position_offsets.push_back(zero ? 0 : static_cast<int64_t>(bits % range));
      }
    }
    if (pass_state) fo.initial_state = kept_state_;
    // Data parallel: the last micro-batch's backward reduces gradient buckets as they get ready.
    if (reducer_ && m + 1 == micro->size()) reducer_->Arm();
    // ZeRO-2/3: every micro-batch's gradients are reduce-scattered to their owners; ZeRO-3 gathers
    // each layer's parameters around its use through the hooks.
    if (sharding_) sharding_->BeginMicroBatch();
    fo.hooks = hooks_.get();
    // LoRA dropout masks keyed by the micro-batch's first sequence (distinct per micro-batch and
    // rank, independent of the world size).
    if (HasLora(*model_))
      SetLoraDropout(*model_, true, t.seed, static_cast<uint64_t>(step_ * t.global_batch + sample));
    sample += b;
    ForwardResult out = model_->Forward(batch.inputs, fo);
    Tensor loss = fo.compute_logits ? model_->Loss(out.logits, batch.targets, batch.weights)
                                    : model_->LossFromHidden(out.hidden, batch.targets,
                                                             batch.weights, t.loss_chunk_tokens);
    // The reducer averages over ranks, hence world_ x this rank's share.
    const double share = step_weight > 0 ? world_ * micro_weight[m] / step_weight : 0.0;
    ops::Scale(loss, share).backward();
    if (sharding_) sharding_->EndMicroBatch();
    loss_sum += loss.item() * micro_weight[m];
    if (m == 0 && is_fam) {
      new_state.clear();
      for (const Tensor& s : out.final_state)
        new_state.push_back(ops::Clone(ops::Slice(s, 0, 0, 1).detach()));
    }
    tokens_seen_ += batch.inputs.numel() * world_;
  }
  double sum_squares = 0;
  if (reducer_) {
    reducer_->Finish();  // gradients averaged over ranks (ZeRO-1: only the owned ones kept)
    const dist::ReducerStats& rs = reducer_->last_stats();
    interval_comm_.comm_s += rs.comm_s;
    interval_comm_.wait_s += rs.wait_s;
    interval_comm_.steps += 1;
    // ZeRO-1: each rank sums its own gradients; otherwise rank 0's copy (all are equal) is used.
    if (zero_ || is_root()) sum_squares = GradSumSquares(params_);
  } else {
    // ZeRO-2/3: the owners receive their gradients; the sum over ranks below adds the shards.
    if (sharding_) sharding_->FinishStep();
    sum_squares = GradSumSquares(params_);
  }
  // Loss, gradient norm and stop request, agreed by every rank in one reduction.
  const int sig = g_stop_signal.load();
  std::vector<double> agreed = {loss_sum, sum_squares, sig == SIGTERM ? 1.0 : 0.0,
                                sig == SIGINT ? 1.0 : 0.0};
  if (world_ > 1) agreed = dist::AllReduceDoubles(*comm_, agreed);
  stop_signal_ = agreed[2] > 0 ? SIGTERM : agreed[3] > 0 ? SIGINT : 0;
  *loss_out = step_weight > 0 ? agreed[0] / step_weight : 0.0;
  const double norm = std::sqrt(agreed[1]);
  const bool finite = std::isfinite(*loss_out) && std::isfinite(norm);
  if (!finite) {
    *applied = false;
    *grad_norm = NAN;
    ++consecutive_skips_;
    optimizer_->ZeroGrad();
    metrics_.Write({{"kind", "event"},
                    {"step", step_ + 1},
                    {"event", "skipped_step"},
                    {"reason", "non-finite loss or gradient"},
                    {"loss", std::isfinite(*loss_out) ? *loss_out : -1.0},
                    {"consecutive", consecutive_skips_}});
    if (is_root())
      std::cerr << "\nwarning: step " << step_ + 1 << " skipped: non-finite loss or gradient ("
                << consecutive_skips_ << " in a row)\n";
    if (consecutive_skips_ >= t.max_consecutive_skips) {
      agreed_error_ = true;  // every rank saw the same reduced loss and norm
      return absl::AbortedError(absl::StrCat(
          "stopping: ", consecutive_skips_,
          " consecutive steps with a non-finite loss or gradient (trainer.max_consecutive_skips = ",
          t.max_consecutive_skips, "); lower optimizer.lr or check the data"));
    }
    ++step_;  // the data was consumed: the step counts, the weights stay
    return absl::OkStatus();
  }
  consecutive_skips_ = 0;
  // Global-norm clipping (as ClipGradNorm, with the norm agreed above).
  *grad_norm = norm;
  const double max_norm = config_.optimizer.grad_clip;
  if (max_norm > 0 && norm > max_norm) ScaleGrads(params_, max_norm / norm);
  optimizer_->Step(LearningRate(schedule_, step_));  // ZeRO-1: owned update, then all-gather
  optimizer_->ZeroGrad();
  if (is_fam) {
    // The kept state comes from the first sequence of the global batch: rank 0's.
    if (world_ > 1) dist::BroadcastTensors(*comm_, new_state, 0);
    kept_state_ = new_state;
  }
  *applied = true;
  ++step_;
  return absl::OkStatus();
}

absl::StatusOr<TrainResult> Trainer::Run() {
  if (absl::Status s = Setup(); !s.ok()) return s;  // includes the resume
  absl::Status written;
  if (is_root())
    written = io::WriteFileAtomic((fs::path(run_dir_) / "config.yaml").string(),
                                  RunConfigToYaml(config_));
  if (absl::Status s = dist::AgreeOnStatus(*comm_, written, "to write config.yaml"); !s.ok())
    return s;
  const TrainerConfig& t = config_.trainer;
  std::cout << absl::StrFormat(
      "run %s: %s, %d parameters, %d train windows of %d tokens, %d steps x %d sequences, on "
      "%s%s\n",
      run_dir_, AttentionTypeName(config_.model.attention.type), model_->ParameterCount(),
      train_.NumWindows(), t.seq_len, t.steps, t.global_batch, GetBackend(model_->device()).name(),
      world_ > 1 ? absl::StrCat(" (rank 0 of ", world_, ", ", comm_->backend_name(), ")") : "");
  g_stop_signal.store(0);
  auto previous_term = std::signal(SIGTERM, OnStopSignal);
  auto previous_int = std::signal(SIGINT, OnStopSignal);

  if (step_ == 0 && has_val_) {
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
      nlohmann::json line = {{"kind", "train"},
                             {"step", step_},
                             {"loss", avg},
                             {"lr", lr},
                             {"grad_norm", grad_norm},
                             {"tokens", tokens_seen_},
                             {"tokens_per_s", tps},
                             {"mfu", peak_ ? nlohmann::json(Mfu(tps)) : nlohmann::json(nullptr)},
                             {"elapsed_s", elapsed_before_ + clock.Seconds()}};
      if (interval_comm_.steps > 0) {
        // Per step: seconds of gradient communication, and the part backward did not hide.
        line["comm_s"] = interval_comm_.comm_s / interval_comm_.steps;
        line["comm_wait_s"] = interval_comm_.wait_s / interval_comm_.steps;
        line["world_size"] = world_;
      }
      run_comm_.comm_s += interval_comm_.comm_s;
      run_comm_.wait_s += interval_comm_.wait_s;
      run_comm_.steps += interval_comm_.steps;
      interval_comm_ = CommTotals();
      metrics_.Write(line);
      ProgressFields p;
      p.step = step_;
      p.total_steps = t.steps;
      p.loss = avg;
      p.lr = lr;
      p.grad_norm = grad_norm;
      p.tokens_per_s = tps;
      if (peak_) p.mfu = Mfu(tps);
      p.eta_s = seconds / interval_steps * static_cast<double>(t.steps - step_);
      if (is_root()) PrintProgress(p, last);
      interval_clock.Reset();
      interval_tokens = tokens_seen_;
      interval_loss = 0;
      interval_steps = 0;
    }
    if (has_val_ && ((t.eval_interval > 0 && step_ % t.eval_interval == 0) || last)) {
      absl::StatusOr<double> v = Validate();
      if (!v.ok()) {
        status = v.status();
        break;
      }
      result_.last_val_loss = *v;
      if (result_.first_val_loss < 0) result_.first_val_loss = *v;
      metrics_.Write(
          {{"kind", "eval"}, {"step", step_}, {"val_loss", *v}, {"val_ppl", std::exp(*v)}});
      std::cout << absl::StrFormat("%sstep %d: val loss %.4f (ppl %.1f)\n", isatty(1) ? "\n" : "",
                                   step_, *v, std::exp(*v));
    }
    // With several ranks, the signal seen by any rank at the end of this step (agreed in
    // TrainStep).
    const int sig = world_ > 1 ? stop_signal_ : g_stop_signal.load();
    if (sig != 0) {
      std::cout << "\nreceived " << (sig == SIGTERM ? "SIGTERM" : "SIGINT")
                << ": saving a checkpoint at step " << step_ << " and exiting\n";
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
    AbortIfDistributed(status);
    return status;  // the last saved checkpoint stays as it was
  }
  elapsed_before_ += clock.Seconds();
  if (config_.checkpoint.save_final || result_.interrupted) {
    if (absl::Status s = SaveCheckpoint(true); !s.ok()) return s;
  }
  if (HasLora(*model_)) {
    // The adapters alone, with the fingerprint of their base: `fam export --merge` takes them.
    // Under ZeRO-3 every rank gathers first (a collective): the adapters and the base weights the
    // fingerprint hashes are spread over the ranks.
    GatherFullWeights();
    // bf16 runs write the f32 master copies ("<name>.master" optimizer state); under ZeRO (1, 2
    // or 3) they are spread over the ranks and gathered on rank 0 first (a collective).
    std::vector<std::pair<std::string, Tensor>> adapters;
    if (rank_ == 0) adapters = LoraTrainableParameters(*model_);
    if (t.precision == DType::kBF16) {
      std::map<std::string, Tensor> state;
      for (auto& [name, tensor] : zero_ ? zero_->GatherStateTensors(0) : optimizer_->StateTensors())
        state[name] = tensor;
      NoGradGuard no_grad;
      for (auto& [name, tensor] : adapters) {
        auto it = state.find(absl::StrCat(name, ".", kMasterSlot));
        tensor = it != state.end() ? it->second : ops::Cast(tensor, DType::kF32);
      }
    }
    absl::Status saved = absl::OkStatus();
    if (rank_ == 0)
      saved = SaveLoraAdapters(*model_, run_dir_ + "/adapters.safetensors",
                               config_.finetune.base_weights, &adapters);
    ReleaseFullWeights();
    if (!saved.ok()) {
      AbortIfDistributed(saved);
      return saved;
    }
  }
  result_.final_step = step_;
  if (run_comm_.steps > 0) {
    const double comm = run_comm_.comm_s / run_comm_.steps,
                 wait = run_comm_.wait_s / run_comm_.steps;
    std::cout << absl::StrFormat(
        "distributed: %d ranks, gradient communication %.2f ms/step, of which %.2f ms/step not "
        "hidden behind backward (%.0f%% overlapped)\n",
        world_, 1e3 * comm, 1e3 * wait, comm > 0 ? 100.0 * std::max(0.0, 1.0 - wait / comm) : 0.0);
  }
  if (sharding_) {
    // Measured peaks per rank over the run (a collective): gathered parameters and gradients.
    const dist::ShardingStats& st = sharding_->stats();
    std::vector<int64_t> peaks(2 * world_, 0);
    peaks[2 * rank_] = st.peak_gathered_bytes;
    peaks[2 * rank_ + 1] = st.peak_grad_bytes;
    peaks = dist::AllReduceInts(*comm_, peaks);
    std::string per_rank;
    for (int r = 0; r < world_; ++r)
      absl::StrAppend(&per_rank, r == 0 ? "" : "; ", "rank ", r, ": gathered parameters ",
                      dist::FormatBytes(static_cast<double>(peaks[2 * r])), ", gradients ",
                      dist::FormatBytes(static_cast<double>(peaks[2 * r + 1])));
    std::cout << absl::StrFormat(
        "zero: peak memory beyond the persistent shards (%s); %d unit gathers, %d prefetched (%d "
        "complete when needed), %d gradient reduce-scatters\n",
        per_rank, st.gathers, st.prefetched, st.prefetch_ready, st.reduce_scatters);
  }
  return result_;
}

void Trainer::AbortIfDistributed(const absl::Status& status) {
  if (world_ <= 1 || agreed_error_ || status.ok()) return;
  comm_->Abort(absl::StrCat("training failed, stopping every rank: ", status.message()),
               cli::ExitCode(status));
}

}  // namespace

absl::StatusOr<TrainResult> RunTraining(const RunConfig& config) {
  Trainer trainer(config);
  absl::StatusOr<TrainResult> result;
  absl::Status s = CatchToStatus([&] { result = trainer.Run(); });
  if (!s.ok()) {
    trainer.AbortIfDistributed(s);  // an exception on this rank alone: end the whole job
    return s;
  }
  return result;
}

}  // namespace fam
