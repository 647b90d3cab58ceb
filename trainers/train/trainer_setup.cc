// Set-up of a training run: communicator, data, model (from the ModelSetup policy), gradient
// synchronisation and optimizer, schedule, checkpoint manager, metrics; and the distributed
// memory report printed at start.
#include <omp.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/core/host_memory.h"
#include "framework/data/tokenizer.h"
#include "framework/dist/collective_helpers.h"
#include "framework/dist/env.h"
#include "framework/io/atomic_file.h"
#include "framework/optim/adafactor.h"
#include "framework/optim/adamw.h"
#include "trainers/train/portable_checkpoint.h"
#include "trainers/train/trainer.h"

#ifdef FAM_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
#endif

namespace fam {
namespace {

namespace fs = std::filesystem;

// Bytes of the accumulated gradient of parameter `p` (in GradDType: f32 for a bf16 parameter).
int64_t GradientBytes(const Tensor& p) {
  return p.numel() * static_cast<int64_t>(DTypeSize(GradDType(p.dtype())));
}

}  // namespace

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

Trainer::Trainer(const RunConfig& config, ModelSetup& setup) : config_(config), setup_(setup) {}

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

  if (absl::Status s = SetupData(); !s.ok()) return s;
  // The tokenizer travels with every checkpoint (trainers/train/portable_checkpoint.h).
  if (is_root() && !config_.data.tokenizer.empty()) {
    absl::StatusOr<std::string> bytes = io::ReadFile(config_.data.tokenizer);
    if (bytes.ok())
      tokenizer_bytes_ = *std::move(bytes);
    else
      std::cerr << "warning: data.tokenizer: " << bytes.status().message()
                << " (checkpoints will not carry the tokenizer)\n";
    // A tokenizer.json takes its special tokens from the tokenizer_config.json beside it.
    const std::filesystem::path config =
        std::filesystem::path(config_.data.tokenizer).parent_path() / kTokenizerConfig;
    std::error_code ec;
    if (bytes.ok() && data::IsTokenizerJson(config_.data.tokenizer) &&
        std::filesystem::is_regular_file(config, ec)) {
      absl::StatusOr<std::string> config_bytes = io::ReadFile(config.string());
      if (config_bytes.ok()) tokenizer_config_bytes_ = *std::move(config_bytes);
    }
  }
  if (absl::Status s = SetupModel(); !s.ok()) return s;
  SetupGradientSync();

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

// The training loader (this rank's slice of each global batch) and the validation batches.
absl::Status Trainer::SetupData() {
  const TrainerConfig& t = config_.trainer;
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
  lo.role_weights = setup_.LoaderRoleWeights();
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
  return absl::OkStatus();
}

// The model from the setup policy, on this rank's device, and the parameters that train.
absl::Status Trainer::SetupModel() {
  const TrainerConfig& t = config_.trainer;
  std::vector<std::string> notes;
  absl::StatusOr<std::unique_ptr<FamModel>> model = setup_.BuildModel(&notes);
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
  params_ = setup_.TrainableParameters(*model_);
  tricks_ = std::make_unique<FamTrainingTricks>(config_.model, static_cast<uint64_t>(t.seed),
                                                t.global_batch);
  return absl::OkStatus();
}

// The gradient synchronisation and the optimizer of distributed.zero: none (one rank), DDP,
// ZeRO-1 (optimizer state sharded), ZeRO-2/3 (gradients, and parameters, sharded by unit).
void Trainer::SetupGradientSync() {
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
  if (sharding_)
    sync_ = dist::MakeShardedGradientSync(sharding_.get());
  else if (reducer_)
    sync_ = dist::MakeAllReduceGradientSync(reducer_.get(), /*owned_only=*/zero1, is_root());
  else
    sync_ = dist::MakeLocalGradientSync();
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

}  // namespace fam
