#include "model/model_runner.h"

#include <torch/cuda.h>
#include <ATen/Parallel.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <fstream>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/feature_serialization.h"

namespace fsrst {
namespace {

constexpr char kMetadataFile[] = "metadata.json";
constexpr char kForwardWithWeights[] = "forward_with_weights";

// Features of one identity: a [count, C, S, S] float tensor on the model's device.
class TensorFeatures final : public ReferenceFeatures {
 public:
  explicit TensorFeatures(torch::Tensor tensor) : tensor_(std::move(tensor)) {}
  int count() const override { return static_cast<int>(tensor_.size(0)); }
  int64_t byte_size() const override {
    return tensor_.numel() * static_cast<int64_t>(tensor_.element_size());
  }
  const torch::Tensor& tensor() const { return tensor_; }

 private:
  const torch::Tensor tensor_;
};

absl::StatusOr<torch::Device> ChooseDevice(const std::string& name) {
  const bool has_cuda = torch::cuda::is_available();
  if (name == "auto") return has_cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name == "cuda" || absl::StartsWith(name, "cuda:")) {
    if (!has_cuda) {
      return absl::UnavailableError(
          absl::StrCat("--device=", name, ": this LibTorch build has no usable CUDA device"));
    }
    try {
      torch::Device device(name);
      return device.has_index() ? device : torch::Device(torch::kCUDA, 0);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("--device=", name, ": ", e.what()));
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device=", name, ": expected auto, cpu, cuda or cuda:N"));
}

// The first line of a LibTorch error: the rest is a C++ backtrace.
std::string FirstLine(const char* what) {
  std::string text(what);
  return text.substr(0, text.find('\n'));
}

class TorchModelRunner final : public ModelRunner {
 public:
  TorchModelRunner(ModelMetadata metadata, ModelParallelism parallelism,
                   torch::jit::Module module, torch::Device device, bool reference_weights)
      : ModelRunner(std::move(metadata), parallelism),
        module_(std::move(module)),
        encode_(module_.get_method("encode_references")),
        device_(device) {
    if (!reference_weights) return;
    if (auto method = module_.find_method(kForwardWithWeights)) forward_with_weights_ = *method;
  }

  std::string device_name() const override { return device_.str(); }
  bool has_reference_weights() const override { return forward_with_weights_.has_value(); }

  absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> EncodeReferences(
      absl::Span<const float> luma, int count) override {
    const ModelMetadata& m = metadata();
    if (count < 1 || count > m.max_references ||
        static_cast<int64_t>(luma.size()) != count * m.reference_pixels()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "EncodeReferences: expected 1..", m.max_references, " references of ",
          m.reference_pixels(), " luma values, got ", count, " and ", luma.size(), " values"));
    }
    try {
      c10::InferenceMode guard;
      torch::Tensor features = EncodeLocked(luma, count);
      return std::shared_ptr<const ReferenceFeatures>(
          std::make_shared<TensorFeatures>(std::move(features)));
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("encode_references failed: ", FirstLine(e.what())));
    }
  }

  absl::StatusOr<std::string> SerializeFeatures(
      const ReferenceFeatures& features) const override {
    const auto* tensor_features = dynamic_cast<const TensorFeatures*>(&features);
    if (tensor_features == nullptr) {
      return absl::InvalidArgumentError("SerializeFeatures: features of another runner");
    }
    try {
      c10::InferenceMode guard;
      const torch::Tensor host =
          tensor_features->tensor().to(torch::kCPU, torch::kFloat).contiguous();
      return SerializeFeatureBytes(
          metadata(), absl::MakeConstSpan(host.sizes().data(), host.sizes().size()),
          absl::MakeConstSpan(host.data_ptr<float>(), static_cast<size_t>(host.numel())));
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("SerializeFeatures: cannot copy the features: ", FirstLine(e.what())));
    }
  }

  absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> DeserializeFeatures(
      absl::string_view bytes) const override {
    absl::StatusOr<FeatureBytesView> view = ParseFeatureBytes(bytes, metadata());
    if (!view.ok()) return view.status();
    try {
      c10::InferenceMode guard;
      torch::Tensor host = torch::empty(view->shape, torch::kFloat);
      std::memcpy(host.data_ptr<float>(), view->values.data(), view->values.size());
      return std::shared_ptr<const ReferenceFeatures>(
          std::make_shared<TensorFeatures>(host.to(device_)));
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("DeserializeFeatures: cannot place the features: ", FirstLine(e.what())));
    }
  }

  absl::Status Enhance(absl::Span<const FrameInput> batch) override {
    if (batch.empty()) return absl::OkStatus();
    try {
      c10::InferenceMode guard;
      EnhanceLocked(batch);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("forward failed: ", FirstLine(e.what())));
    }
  }

  absl::Status Warmup(int max_batch_size) override {
    const ModelMetadata& m = metadata();
    std::vector<float> luma(m.max_references * m.reference_pixels(), 0.5f);
    absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> refs =
        EncodeReferences(luma, m.max_references);
    if (!refs.ok()) return refs.status();
    std::vector<uint8_t> frame(m.frame_bytes(), 128);
    std::vector<uint8_t> output(m.output_bytes());
    for (int size = 1; size <= max_batch_size; ++size) {
      for (bool with_references : {true, false}) {
        std::vector<FrameInput> batch(size);
        for (FrameInput& f : batch) {
          f.frame_rgb = frame.data();
          f.references = with_references ? refs->get() : nullptr;
          f.output_rgb = output.data();
        }
        absl::Status status = Enhance(batch);
        if (!status.ok()) return status;
      }
    }
    return absl::OkStatus();
  }

 private:
  torch::Tensor EncodeLocked(absl::Span<const float> luma, int count) {
    const int64_t r = metadata().reference_size;
    torch::Tensor host = torch::from_blob(const_cast<float*>(luma.data()), {count, 1, r, r},
                                          torch::kFloat);
    return encode_({host.to(device_)}).toTensor();
  }

  void EnhanceLocked(absl::Span<const FrameInput> batch) {
    const ModelMetadata& m = metadata();
    const int64_t b = static_cast<int64_t>(batch.size());
    const int64_t l = m.lr_size;

    torch::Tensor frames_host = torch::empty({b, l, l, 3}, torch::kUInt8);
    uint8_t* dst = frames_host.data_ptr<uint8_t>();
    for (const FrameInput& f : batch) {
      std::memcpy(dst, f.frame_rgb, m.frame_bytes());
      dst += m.frame_bytes();
    }
    torch::Tensor lr = frames_host.to(device_)
                           .permute({0, 3, 1, 2})
                           .to(torch::kFloat)
                           .div_(255.0f)
                           .contiguous();

    // Inline references of the whole batch go through the encoder in one call.
    int64_t inline_count = 0;
    for (const FrameInput& f : batch) {
      if (f.references == nullptr) inline_count += f.reference_luma_count;
    }
    torch::Tensor inline_features;
    if (inline_count > 0) {
      std::vector<float> luma;
      luma.reserve(inline_count * m.reference_pixels());
      for (const FrameInput& f : batch) {
        if (f.references == nullptr) {
          luma.insert(luma.end(), f.reference_luma.begin(), f.reference_luma.end());
        }
      }
      inline_features = EncodeLocked(luma, static_cast<int>(inline_count));
    }

    int64_t max_k = 0;
    for (const FrameInput& f : batch) {
      max_k = std::max<int64_t>(max_k, f.references != nullptr ? f.references->count()
                                                                : f.reference_luma_count);
    }
    std::vector<int64_t> feature_dims = {b, max_k};
    feature_dims.insert(feature_dims.end(), m.feature_shape.begin(), m.feature_shape.end());
    torch::Tensor features = torch::zeros(feature_dims, lr.options());
    torch::Tensor mask_host = torch::zeros({b, max_k}, torch::kBool);
    bool* mask = mask_host.data_ptr<bool>();
    std::vector<int64_t> counts(b, 0);  // real slots per frame
    int64_t inline_offset = 0;
    for (int64_t i = 0; i < b; ++i) {
      const FrameInput& f = batch[i];
      torch::Tensor source;
      if (f.references != nullptr) {
        source = static_cast<const TensorFeatures*>(f.references)->tensor();
      } else if (f.reference_luma_count > 0) {
        source = inline_features.narrow(0, inline_offset, f.reference_luma_count);
        inline_offset += f.reference_luma_count;
      } else {
        continue;
      }
      const int64_t k = source.size(0);
      counts[i] = k;
      features.select(0, i).narrow(0, 0, k).copy_(source);
      std::fill(mask + i * max_k, mask + i * max_k + k, true);
    }

    std::vector<torch::jit::IValue> inputs = {lr, features, mask_host.to(device_)};
    torch::Tensor out;
    if (forward_with_weights_.has_value()) {
      auto results = (*forward_with_weights_)(std::move(inputs)).toTuple();
      out = results->elements()[0].toTensor();
      CopyWeights(results->elements()[1].toTensor(), counts, batch);
    } else {
      out = module_.forward(std::move(inputs)).toTensor();
    }
    torch::Tensor out_host = out.mul(255.0f)
                                 .round_()
                                 .clamp_(0.0f, 255.0f)
                                 .to(torch::kUInt8)
                                 .permute({0, 2, 3, 1})
                                 .contiguous()
                                 .to(torch::kCPU);
    const uint8_t* src = out_host.data_ptr<uint8_t>();
    for (const FrameInput& f : batch) {
      std::memcpy(f.output_rgb, src, m.output_bytes());
      src += m.output_bytes();
    }
  }

  // weights [B, max_k] -> each frame's first counts[i] slots, the real ones.
  static void CopyWeights(const torch::Tensor& weights, const std::vector<int64_t>& counts,
                          absl::Span<const FrameInput> batch) {
    torch::Tensor host = weights.to(torch::kCPU, torch::kFloat).contiguous();
    const int64_t stride = host.size(1);
    const float* src = host.data_ptr<float>();
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].reference_weights == nullptr || counts[i] == 0) continue;
      std::memcpy(batch[i].reference_weights, src + i * stride, counts[i] * sizeof(float));
    }
  }

  torch::jit::Module module_;
  torch::jit::Method encode_;
  std::optional<torch::jit::Method> forward_with_weights_;  // absent in older exports
  const torch::Device device_;
};

}  // namespace

ModelParallelism ResolveModelParallelism(int instances, int threads, bool on_cuda, int cores) {
  cores = std::max(1, cores);
  ModelParallelism p;
  if (on_cuda) {
    p.instances = instances > 0 ? instances : 1;
    p.threads = threads > 0 ? threads : cores;
  } else if (instances > 0) {
    p.instances = instances;
    p.threads = threads > 0 ? threads : std::max(1, cores / instances);
  } else {
    p.threads = threads > 0 ? threads : 1;
    p.instances = std::max(1, cores / p.threads);
  }
  return p;
}

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Load(const std::string& path,
                                                               const ModelRunnerOptions& options) {
  if (!std::ifstream(path).good()) {
    return absl::NotFoundError(absl::StrCat("--model=", path, ": cannot open the file"));
  }
  absl::StatusOr<torch::Device> device = ChooseDevice(options.device);
  if (!device.ok()) return device.status();
  const ModelParallelism parallelism = ResolveModelParallelism(
      options.num_instances, options.num_threads, device->is_cuda(),
      static_cast<int>(std::thread::hardware_concurrency()));
  // Process-wide; every thread that runs the model picks it up on its first call.
  at::set_num_threads(parallelism.threads);
  // The profiling executor re-specialises the graph for every new input shape
  // (batch size, reference count), with a slow first run each time and a
  // fallback once its budget of shapes is spent; a server sees many shapes.
  torch::jit::getProfilingMode().store(options.jit_profiling);
  try {
    torch::jit::ExtraFilesMap extra{{kMetadataFile, ""}};
    torch::jit::Module module = torch::jit::load(path, *device, extra);
    if (extra[kMetadataFile].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model=", path, ": no ", kMetadataFile,
                       " inside; export it with model/fsrst/export.py"));
    }
    absl::StatusOr<ModelMetadata> metadata = ParseModelMetadata(extra[kMetadataFile]);
    if (!metadata.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model=", path, ": ", metadata.status().message()));
    }
    if (!module.find_method("encode_references")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model=", path, ": the module has no encode_references method"));
    }
    module.eval();
    if (options.freeze) {
      std::vector<std::string> methods = {"encode_references"};
      // Freezing drops every method it is not told to keep.
      if (options.reference_weights && module.find_method(kForwardWithWeights)) {
        methods.push_back(kForwardWithWeights);
      }
      module = torch::jit::freeze(module, methods);
      module = torch::jit::optimize_for_inference(module, methods);
    }
    return std::unique_ptr<ModelRunner>(
        new TorchModelRunner(*std::move(metadata), parallelism, std::move(module), *device,
                             options.reference_weights));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model=", path, ": not a loadable TorchScript file: ", FirstLine(e.what())));
  }
}

}  // namespace fsrst
