// fsrst_bench: load generator for fsrst_server, and the raw-model baseline.
//
//   fsrst_bench --server=127.0.0.1:50051 --mode=closed --concurrency=8 --rpc=unary
//   fsrst_bench --server=... --mode=open --rate=20 --duration_s=30
//   fsrst_bench --raw --model=model/weights/fsrst_x4.pt --batch_size=8
//   fsrst_bench --server=... --mode=paired --model=model/weights/fsrst_x4.pt
//
// Closed loop: N callers, each sends its next frame when the last is answered
// (streams keep --stream_window frames in flight per caller). Open loop: frames
// arrive as a Poisson process at --rate per second, whatever the answers do;
// latency counts from the scheduled arrival, so queueing is not hidden.
// Paired: one caller alternates a single-frame forward of the model in-process
// (as one of the server's instances runs it) with a unary call to the server,
// so both see the same moments of a machine whose speed drifts; "paired_raw"
// in the JSON is the forwards' latency. --raw runs the TorchScript model in-process with the same batch size: the
// limit the server is measured against.

#include <atomic>
#include <deque>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/types/span.h"
#include "clients/bench/latency_recorder.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "model/model_runner.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "fsrst_server address");
ABSL_FLAG(std::string, mode, "closed",
          "closed (N concurrent callers), open (Poisson arrivals), or paired (one caller "
          "alternating an in-process forward of --model and a unary call)");
ABSL_FLAG(std::string, rpc, "unary", "unary (Enhance) or stream (EnhanceStream)");
ABSL_FLAG(int, concurrency, 1, "closed loop: concurrent callers");
ABSL_FLAG(double, rate, 10, "open loop: mean arrivals per second");
ABSL_FLAG(int, stream_window, 2, "stream: frames in flight per caller");
ABSL_FLAG(int, identities, 8, "distinct identities the frames belong to");
ABSL_FLAG(std::string, references, "cached",
          "cached (registered once), inline (sent with every frame) or none");
ABSL_FLAG(int, refs_per_identity, 3, "references per identity");
ABSL_FLAG(std::string, encoding, "rgb8", "frame and answer encoding: rgb8 or jpeg");
ABSL_FLAG(double, duration_s, 10, "measured seconds");
ABSL_FLAG(double, warmup_s, 2, "seconds run before measuring");
ABSL_FLAG(int, deadline_ms, 10000, "per-call deadline");
ABSL_FLAG(bool, progress, true, "a live progress line on stderr");
ABSL_FLAG(std::string, json_out, "", "write the results as JSON here");
ABSL_FLAG(bool, raw, false, "run the model in-process instead of calling a server");
ABSL_FLAG(std::string, model, "model/weights/fsrst_x4.pt",
          "--raw, --mode=paired: TorchScript file");
ABSL_FLAG(int, batch_size, 1, "--raw: frames per model call");
ABSL_FLAG(int, model_instances, 0,
          "--raw, --mode=paired: model calls side by side, as fsrst_server --model_instances "
          "(0 = auto)");
ABSL_FLAG(int, model_threads, 0,
          "--raw, --mode=paired: intra-op threads per call, as fsrst_server --model_threads "
          "(0 = auto)");

namespace fsrst::bench {
namespace {

namespace v1 = ::fsrst::v1;

std::string Noise(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string bytes(n, '\0');
  for (char& b : bytes) b = static_cast<char>(gen() & 0xff);
  return bytes;
}

v1::Image Rgb8(int size, uint32_t seed) {
  v1::Image image;
  image.set_encoding(v1::ENCODING_RGB8);
  image.set_width(size);
  image.set_height(size);
  image.set_data(Noise(static_cast<size_t>(size) * size * 3, seed));
  return image;
}

std::string IdentityId(int i) { return absl::StrCat("bench-", i); }

struct Workload {
  std::vector<v1::EnhanceRequest> requests;  // one per identity, reused for every frame
};

// Runs `body` on a progress line until the recorder stops.
class ProgressLine {
 public:
  explicit ProgressLine(const LatencyRecorder* recorder) : recorder_(recorder) {
    if (!absl::GetFlag(FLAGS_progress)) return;
    thread_ = std::thread([this] {
      const absl::Time start = absl::Now();
      while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
        const double t = absl::ToDoubleSeconds(absl::Now() - start);
        const LoadSummary s = recorder_->Summarize();
        int64_t errors = 0;
        for (const auto& [code, n] : s.errors) errors += n;
        std::fprintf(stderr, "\r[%6.1f s] %s %8lld ok %8.1f frames/s  p50 %7.1f ms  errors %lld ",
                     t, recorder_->measuring() ? "measuring" : "warm-up  ",
                     static_cast<long long>(s.frames_ok), s.throughput_fps, s.p50_ms,
                     static_cast<long long>(errors));
      }
      std::fprintf(stderr, "\n");
    });
  }
  ~ProgressLine() {
    stop_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  const LatencyRecorder* recorder_;
  absl::Notification stop_;
  std::thread thread_;
};

// Warm-up, then the measured window, while `generators` run until `stop`.
// `also`, if not null, is measured over the same window.
void RunWindow(LatencyRecorder* recorder, std::atomic<bool>* stop,
               LatencyRecorder* also = nullptr) {
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_warmup_s)));
  recorder->StartMeasuring();
  if (also != nullptr) also->StartMeasuring();
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_duration_s)));
  recorder->StopMeasuring();
  if (also != nullptr) also->StopMeasuring();
  stop->store(true);
}

std::string CodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                 "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                 "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : absl::StrCat("CODE_", i);
}

// Frames get --deadline_ms; set-up calls (info, registration) a generous fixed one.
void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(absl::GetFlag(FLAGS_deadline_ms)));
}

void SetSetupDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
}

absl::StatusOr<Workload> Prepare(v1::FaceSuperResolution::Stub* stub,
                                 const v1::GetServerInfoResponse& info) {
  const std::string references = absl::GetFlag(FLAGS_references);
  const int identities = absl::GetFlag(FLAGS_identities);
  const int refs = absl::GetFlag(FLAGS_refs_per_identity);
  Workload w;
  for (int i = 0; i < identities; ++i) {
    v1::EnhanceRequest request;
    *request.mutable_frame() = Rgb8(static_cast<int>(info.lr_size()), 1000 + i);
    request.set_output_encoding(absl::GetFlag(FLAGS_encoding) == "jpeg" ? v1::ENCODING_JPEG
                                                                         : v1::ENCODING_RGB8);
    std::vector<v1::Image> images;
    for (int r = 0; r < refs; ++r) images.push_back(Rgb8(info.reference_size(), 100 * i + r));
    if (references == "cached") {
      v1::RegisterReferencesRequest reg;
      reg.set_identity_id(IdentityId(i));
      for (auto& image : images) *reg.add_references() = image;
      grpc::ClientContext context;
      SetSetupDeadline(&context);
      v1::RegisterReferencesResponse response;
      grpc::Status status = stub->RegisterReferences(&context, reg, &response);
      if (!status.ok()) {
        return absl::UnavailableError(absl::StrCat("RegisterReferences: ", status.error_message()));
      }
      request.set_identity_id(IdentityId(i));
    } else if (references == "inline") {
      for (auto& image : images) *request.add_references() = image;
    } else if (references != "none") {
      return absl::InvalidArgumentError("--references: expected cached, inline or none");
    }
    w.requests.push_back(std::move(request));
  }
  return w;
}

// One blocking Enhance call, recorded.
void CallEnhance(v1::FaceSuperResolution::Stub* stub, const v1::EnhanceRequest& request,
                 v1::EnhanceResponse* response, LatencyRecorder* recorder) {
  grpc::ClientContext context;
  SetDeadline(&context);
  const absl::Time start = absl::Now();
  grpc::Status status = stub->Enhance(&context, request, response);
  if (status.ok()) {
    recorder->RecordOk(absl::Now() - start);
  } else {
    recorder->RecordError(CodeName(status.error_code()), absl::Now() - start);
    recorder->NoteErrorMessage(CodeName(status.error_code()), status.error_message());
  }
}

void ClosedUnaryCaller(v1::FaceSuperResolution::Stub* stub, const Workload& w, int caller,
                       LatencyRecorder* recorder, std::atomic<bool>* stop) {
  v1::EnhanceResponse response;
  for (uint64_t n = caller; !stop->load(); n += absl::GetFlag(FLAGS_concurrency)) {
    CallEnhance(stub, w.requests[n % w.requests.size()], &response, recorder);
  }
}

// --mode=paired: a forward of `runner` on the identity's frame, then the same
// frame served, in turn. The references are random (not the workload's); a
// forward's cost does not depend on pixel values.
absl::Status PairedCaller(v1::FaceSuperResolution::Stub* stub, const Workload& w,
                          ModelRunner* runner, LatencyRecorder* recorder,
                          LatencyRecorder* raw_recorder, std::atomic<bool>* stop) {
  const ModelMetadata& m = runner->metadata();
  const int refs = absl::GetFlag(FLAGS_refs_per_identity);
  std::vector<float> luma(static_cast<size_t>(refs) * m.reference_pixels(), 0.5f);
  absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> features =
      runner->EncodeReferences(luma, refs);
  if (!features.ok()) return features.status();
  std::vector<uint8_t> output(m.output_bytes());
  v1::EnhanceResponse response;
  for (uint64_t n = 0; !stop->load(); ++n) {
    const v1::EnhanceRequest& request = w.requests[n % w.requests.size()];
    FrameInput frame;
    frame.frame_rgb = reinterpret_cast<const uint8_t*>(request.frame().data().data());
    frame.output_rgb = output.data();
    frame.references = features->get();
    const absl::Time start = absl::Now();
    const absl::Status status = runner->Enhance(absl::MakeConstSpan(&frame, 1));
    if (!status.ok()) return status;
    raw_recorder->RecordOk(absl::Now() - start);
    CallEnhance(stub, request, &response, recorder);
  }
  return absl::OkStatus();
}

void ClosedStreamCaller(v1::FaceSuperResolution::Stub* stub, const Workload& w, int caller,
                        LatencyRecorder* recorder, std::atomic<bool>* stop) {
  grpc::ClientContext context;
  auto stream = stub->EnhanceStream(&context);
  const int window = std::max(1, absl::GetFlag(FLAGS_stream_window));
  std::deque<absl::Time> sent;  // send times of frames in flight, in order
  uint64_t sequence = 0;
  v1::EnhanceRequest request;
  auto send = [&] {
    request = w.requests[(caller + sequence) % w.requests.size()];
    request.set_sequence_number(sequence++);
    sent.push_back(absl::Now());
    return stream->Write(request);
  };
  bool open = true;
  for (int i = 0; i < window && open; ++i) open = send();
  v1::EnhanceResponse response;
  while (open && stream->Read(&response)) {
    const absl::Time start = sent.front();
    sent.pop_front();
    if (response.has_error()) {
      const std::string code = CodeName(static_cast<grpc::StatusCode>(response.error().code()));
      recorder->RecordError(code, absl::Now() - start);
      recorder->NoteErrorMessage(code, response.error().message());
    } else {
      recorder->RecordOk(absl::Now() - start);
    }
    if (stop->load()) break;
    open = send();
  }
  stream->WritesDone();
  while (!sent.empty() && stream->Read(&response)) sent.pop_front();
  grpc::Status status = stream->Finish();
  if (!status.ok() && !stop->load()) {
    recorder->RecordError(CodeName(status.error_code()), absl::InfiniteDuration());
    recorder->NoteErrorMessage(CodeName(status.error_code()), status.error_message());
  }
}

// Open loop: a Poisson process schedules arrivals; each is an asynchronous call.
void OpenLoop(v1::FaceSuperResolution::Stub* stub, const Workload& w, LatencyRecorder* recorder,
              std::atomic<bool>* stop) {
  struct Call {
    grpc::ClientContext context;
    v1::EnhanceResponse response;
    absl::Time arrival;  // scheduled: latency counts from here, whatever delays the send
    absl::Time sent;
  };
  std::atomic<int64_t> in_flight{0};
  std::mt19937_64 gen(7);
  std::exponential_distribution<double> gap(absl::GetFlag(FLAGS_rate));
  absl::Time next = absl::Now();
  for (uint64_t n = 0; !stop->load(); ++n) {
    next += absl::Seconds(gap(gen));
    const absl::Duration wait = next - absl::Now();
    if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
    auto* call = new Call;
    call->arrival = next;
    SetDeadline(&call->context);
    ++in_flight;
    call->sent = absl::Now();
    recorder->RecordSendLag(call->sent - call->arrival);
    stub->async()->Enhance(
        &call->context, &w.requests[n % w.requests.size()], &call->response,
        [call, recorder, &in_flight](grpc::Status status) {
          const absl::Time now = absl::Now();
          if (status.ok()) {
            recorder->RecordOk(now - call->arrival);
          } else {
            recorder->RecordError(CodeName(status.error_code()), now - call->arrival,
                                  now - call->sent);
            recorder->NoteErrorMessage(CodeName(status.error_code()), status.error_message());
          }
          delete call;
          --in_flight;
        });
  }
  while (in_flight.load() > 0) absl::SleepFor(absl::Milliseconds(5));
}

std::map<std::string, std::string> ConfigMap() {
  std::map<std::string, std::string> c;
  c["raw"] = absl::GetFlag(FLAGS_raw) ? "true" : "false";
  c["references"] = absl::GetFlag(FLAGS_references);
  c["identities"] = absl::StrCat(absl::GetFlag(FLAGS_identities));
  c["refs_per_identity"] = absl::StrCat(absl::GetFlag(FLAGS_refs_per_identity));
  c["duration_s"] = absl::StrCat(absl::GetFlag(FLAGS_duration_s));
  if (absl::GetFlag(FLAGS_raw)) {
    c["model"] = absl::GetFlag(FLAGS_model);
    c["batch_size"] = absl::StrCat(absl::GetFlag(FLAGS_batch_size));
  } else {
    c["server"] = absl::GetFlag(FLAGS_server);
    c["mode"] = absl::GetFlag(FLAGS_mode);
    c["rpc"] = absl::GetFlag(FLAGS_rpc);
    c["encoding"] = absl::GetFlag(FLAGS_encoding);
    c["concurrency"] = absl::StrCat(absl::GetFlag(FLAGS_concurrency));
    if (absl::GetFlag(FLAGS_mode) == "open") c["rate"] = absl::StrCat(absl::GetFlag(FLAGS_rate));
    if (absl::GetFlag(FLAGS_rpc) == "stream") {
      c["stream_window"] = absl::StrCat(absl::GetFlag(FLAGS_stream_window));
    }
  }
  return c;
}

// The model in-process, resolved as fsrst_server resolves it on this machine.
absl::StatusOr<std::unique_ptr<ModelRunner>> LoadRawModel(
    std::map<std::string, std::string>* config) {
  ModelRunnerOptions options;
  options.device = "cpu";
  options.num_instances = absl::GetFlag(FLAGS_model_instances);
  options.num_threads = absl::GetFlag(FLAGS_model_threads);
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner =
      ModelRunner::Load(absl::GetFlag(FLAGS_model), options);
  if (!runner.ok()) return runner.status();
  const ModelParallelism& parallelism = (*runner)->parallelism();
  (*config)["model_name"] = (*runner)->metadata().name;
  (*config)["device"] = (*runner)->device_name();
  (*config)["model_instances"] = absl::StrCat(parallelism.instances);
  (*config)["model_threads"] = absl::StrCat(parallelism.threads);
  return runner;
}

absl::Status RunServer(LatencyRecorder* recorder, LatencyRecorder* raw_recorder,
                       std::map<std::string, std::string>* config) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server),
                                           grpc::InsecureChannelCredentials(), args);
  auto stub = v1::FaceSuperResolution::NewStub(channel);
  v1::GetServerInfoResponse info;
  {
    grpc::ClientContext context;
    SetSetupDeadline(&context);
    grpc::Status status = stub->GetServerInfo(&context, {}, &info);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat("GetServerInfo on ", absl::GetFlag(FLAGS_server),
                                                 ": ", status.error_message()));
    }
  }
  (*config)["model_name"] = info.model_name();
  (*config)["device"] = info.device();
  (*config)["server_max_batch_size"] = absl::StrCat(info.max_batch_size());
  absl::StatusOr<Workload> workload = Prepare(stub.get(), info);
  if (!workload.ok()) return workload.status();

  std::atomic<bool> stop{false};
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const std::string rpc = absl::GetFlag(FLAGS_rpc);
  if (mode == "paired") {
    if (rpc != "unary") return absl::InvalidArgumentError("--mode=paired supports --rpc=unary");
    if (absl::GetFlag(FLAGS_references) != "cached") {
      return absl::InvalidArgumentError("--mode=paired supports --references=cached");
    }
    std::map<std::string, std::string> raw_config;
    absl::StatusOr<std::unique_ptr<ModelRunner>> runner = LoadRawModel(&raw_config);
    if (!runner.ok()) return runner.status();
    if (raw_config["model_name"] != info.model_name()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model is ", raw_config["model_name"], " but the server serves ",
                       info.model_name(), "; pair the same model"));
    }
    if (absl::Status warm = (*runner)->Warmup(1); !warm.ok()) return warm;
    (*config)["paired_model_threads"] = raw_config["model_threads"];
    absl::Status caller_status;
    ProgressLine progress(recorder);
    std::thread caller([&] {
      caller_status = PairedCaller(stub.get(), *workload, runner->get(), recorder,
                                   raw_recorder, &stop);
      stop.store(true);
    });
    RunWindow(recorder, &stop, raw_recorder);
    caller.join();
    return caller_status;
  }
  ProgressLine progress(recorder);
  std::vector<std::thread> threads;
  if (mode == "open") {
    if (rpc != "unary") return absl::InvalidArgumentError("--mode=open supports --rpc=unary");
    threads.emplace_back([&] { OpenLoop(stub.get(), *workload, recorder, &stop); });
  } else if (mode == "closed") {
    for (int i = 0; i < absl::GetFlag(FLAGS_concurrency); ++i) {
      if (rpc == "stream") {
        threads.emplace_back([&, i] { ClosedStreamCaller(stub.get(), *workload, i, recorder, &stop); });
      } else if (rpc == "unary") {
        threads.emplace_back([&, i] { ClosedUnaryCaller(stub.get(), *workload, i, recorder, &stop); });
      } else {
        return absl::InvalidArgumentError("--rpc: expected unary or stream");
      }
    }
  } else {
    return absl::InvalidArgumentError("--mode: expected closed, open or paired");
  }
  RunWindow(recorder, &stop);
  for (auto& t : threads) t.join();
  return absl::OkStatus();
}

absl::Status RunRaw(LatencyRecorder* recorder, std::map<std::string, std::string>* config) {
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner = LoadRawModel(config);
  if (!runner.ok()) return runner.status();
  const ModelMetadata& m = (*runner)->metadata();
  const ModelParallelism& parallelism = (*runner)->parallelism();
  const int batch_size = absl::GetFlag(FLAGS_batch_size);
  const int identities = absl::GetFlag(FLAGS_identities);
  const int refs = absl::GetFlag(FLAGS_refs_per_identity);
  const std::string references = absl::GetFlag(FLAGS_references);

  std::vector<std::vector<float>> luma(identities);
  std::vector<std::shared_ptr<const ReferenceFeatures>> features(identities);
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  for (int i = 0; i < identities; ++i) {
    luma[i].resize(refs * m.reference_pixels());
    for (float& v : luma[i]) v = uniform(gen);
    if (references == "cached") {
      auto encoded = (*runner)->EncodeReferences(luma[i], refs);
      if (!encoded.ok()) return encoded.status();
      features[i] = *encoded;
    }
  }
  std::vector<std::string> frames(batch_size);
  for (int b = 0; b < batch_size; ++b) frames[b] = Noise(m.frame_bytes(), b);
  absl::Status warm = (*runner)->Warmup(batch_size);
  if (!warm.ok()) return warm;

  // One loop per model instance, each with its own outputs, as the server's
  // batcher workers run: the limit the server is measured against.
  std::atomic<bool> stop{false};
  ProgressLine progress(recorder);
  std::vector<std::thread> loops;
  for (int instance = 0; instance < parallelism.instances; ++instance) {
    loops.emplace_back([&] {
      std::vector<std::vector<uint8_t>> outputs(batch_size,
                                                std::vector<uint8_t>(m.output_bytes()));
      std::vector<FrameInput> batch(batch_size);
      for (int b = 0; b < batch_size; ++b) {
        FrameInput& f = batch[b];
        f.frame_rgb = reinterpret_cast<const uint8_t*>(frames[b].data());
        f.output_rgb = outputs[b].data();
        const int identity = b % identities;
        if (references == "cached") f.references = features[identity].get();
        if (references == "inline") {
          f.reference_luma = luma[identity];
          f.reference_luma_count = refs;
        }
      }
      while (!stop.load()) {
        const absl::Time start = absl::Now();
        absl::Status status = (*runner)->Enhance(batch);
        const absl::Duration took = absl::Now() - start;
        for (int b = 0; b < batch_size; ++b) {
          if (status.ok()) {
            recorder->RecordOk(took);
          } else {
            recorder->RecordError("INTERNAL", took);
            recorder->NoteErrorMessage("INTERNAL", std::string(status.message()));
          }
        }
      }
    });
  }
  RunWindow(recorder, &stop);
  for (std::thread& loop : loops) loop.join();
  return absl::OkStatus();
}

int Main() {
  LatencyRecorder recorder;
  LatencyRecorder raw_recorder;  // --mode=paired: the in-process forwards
  std::map<std::string, std::string> config = ConfigMap();
  absl::Status status = absl::GetFlag(FLAGS_raw) ? RunRaw(&recorder, &config)
                                                 : RunServer(&recorder, &raw_recorder, &config);
  if (!status.ok()) {
    std::cerr << "fsrst_bench: " << status << std::endl;
    return 1;
  }
  const LoadSummary s = recorder.Summarize();
  std::printf("%s: %.1f frames/s over %.1f s (%lld ok); latency ms p50 %.2f p90 %.2f p99 %.2f max %.2f",
              absl::GetFlag(FLAGS_raw) ? "raw" : "served", s.throughput_fps, s.duration_s,
              static_cast<long long>(s.frames_ok), s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms);
  for (const auto& [code, n] : s.errors) std::printf("; %s %lld", code.c_str(), static_cast<long long>(n));
  std::printf("\n");
  for (const auto& [code, message] : s.error_examples) {
    std::printf("  first %s: %s\n", code.c_str(), message.c_str());
  }
  const bool paired = !absl::GetFlag(FLAGS_raw) && absl::GetFlag(FLAGS_mode) == "paired";
  const LoadSummary raw = raw_recorder.Summarize();
  if (paired) {
    std::printf("paired raw forward: %lld frames; latency ms p50 %.2f p90 %.2f p99 %.2f max %.2f\n",
                static_cast<long long>(raw.frames_ok), raw.p50_ms, raw.p90_ms, raw.p99_ms,
                raw.max_ms);
  }
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    std::ofstream(json_out) << ToJson(s, config, recorder.SortedLatenciesMs(),
                                      paired ? &raw : nullptr);
  }
  return 0;
}

}  // namespace
}  // namespace fsrst::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "load generator for fsrst_server, and the raw-model baseline (--raw).");
  absl::ParseCommandLine(argc, argv);
  return fsrst::bench::Main();
}
