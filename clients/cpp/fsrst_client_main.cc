// fsrst_client: the command-line client of fsrst_server.
//
//   fsrst_client health [--service=NAME]
//   fsrst_client info
//   fsrst_client register --identity=ID --ref a.jpg --ref b.jpg
//   fsrst_client enhance  --identity=ID --frame f.jpg --out out.jpg [--ref a.jpg ...]
//   fsrst_client stream   --identity=ID [--ref a.jpg ...] --frames_dir DIR --out_dir DIR
//   fsrst_client identity --identity=ID
//   fsrst_client delete   --identity=ID
//
// Images are JPEG (.jpg/.jpeg), PNG (.png) or square raw RGB8 (.rgb). --ref
// may be repeated (or given as a comma-separated list). What succeeded and
// the summaries go to stdout; errors to stderr, a server's answer as
// "fsrst_client: CODE: message", a local file's as "fsrst_client: error: ...".
// Exit status: 0 on success, 1 when a call or a file fails, 2 on bad usage.

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "clients/cpp/fsrst_client.h"
#include "clients/cpp/image_files.h"

ABSL_FLAG(std::string, server, "",
          "fsrst_server address, host:port; empty: $FSRST_SERVER if set, else 127.0.0.1:50051");
ABSL_FLAG(std::string, identity, "", "identity id: 1 to 128 characters of [A-Za-z0-9._:@-]");
ABSL_FLAG(std::vector<std::string>, ref, {},
          "reference image (.jpg/.png/.rgb); repeat the flag, or give a comma-separated list");
ABSL_FLAG(std::string, frame, "", "enhance: the low-resolution frame (.jpg/.png/.rgb)");
ABSL_FLAG(std::string, out, "", "enhance: where to write the answer (.jpg/.png/.rgb)");
ABSL_FLAG(std::string, frames_dir, "",
          "stream: folder whose .jpg/.jpeg/.png/.rgb frames are sent in name order");
ABSL_FLAG(std::string, out_dir, "", "stream: folder for the answers, named like the frames");
ABSL_FLAG(int, window, 8, "stream: frames sent ahead of the answers received");
ABSL_FLAG(int, frame_interval_ms, 0,
          "stream: send at most one frame per this many ms (a camera's pace); 0 = as the "
          "window allows");
ABSL_FLAG(int, jpeg_quality, 0, "quality 1..100 of JPEG answers; 0 = the server's default");
ABSL_FLAG(int64_t, timeout_ms, 30000, "deadline of each unary call; 0 = none");
ABSL_FLAG(int64_t, stream_timeout_ms, 600000, "stream: deadline of the whole stream; 0 = none");
ABSL_FLAG(bool, wait_for_ready, false, "wait (within the deadline) for an unreachable server");
ABSL_FLAG(std::string, service, "", "health: the service to check; empty = the whole server");
ABSL_FLAG(std::string, api_key, "",
          "API key for servers run with --api_keys_file; empty: $FSRST_API_KEY if set (keeps "
          "the key out of the process list)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA of the server's certificate: connect with TLS");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for servers that require mTLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");

namespace fsrst {
namespace {

constexpr int kFailed = 1;
constexpr int kUsage = 2;

// Whether the calls carry an API key (--api_key or $FSRST_API_KEY); set once in Main.
bool api_key_given = false;

// A call failed: the server's (or gRPC's) code and message, and for
// UNAUTHENTICATED how to send a key with this CLI.
int Fail(const absl::Status& status) {
  std::cerr << "fsrst_client: " << status << "\n";
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    std::cerr << (api_key_given
                      ? "fsrst_client: the server refused the API key sent (from --api_key or "
                        "$FSRST_API_KEY); check it with whoever runs the server\n"
                      : "fsrst_client: this server requires an API key: pass --api_key=KEY, or "
                        "set FSRST_API_KEY=KEY (keeps it out of ps); other clients send the "
                        "metadata `authorization: Bearer KEY`\n");
  }
  return kFailed;
}

// Something on this machine failed (a file to read or write): no status code,
// so it cannot be taken for the server's answer.
int FailLocal(const absl::Status& status) {
  std::cerr << "fsrst_client: error: " << status.message() << "\n";
  return kFailed;
}

int Usage(const std::string& message) {
  std::cerr << "fsrst_client: " << message << "\n(see fsrst_client --help)\n";
  return kUsage;
}

CallOptions OptionsFromFlags(int64_t timeout_ms) {
  CallOptions options;
  options.timeout = timeout_ms > 0 ? absl::Milliseconds(timeout_ms) : absl::InfiniteDuration();
  options.jpeg_quality = static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_jpeg_quality)));
  options.wait_for_ready = absl::GetFlag(FLAGS_wait_for_ready);
  return options;
}

// absl flags keep only the last of a repeated flag; --ref may be repeated, so
// it is taken out of argv here (all its forms), and the rest parsed by absl.
std::vector<char*> ExtractRefs(int argc, char** argv, std::vector<std::string>* refs) {
  std::vector<char*> rest;
  bool after_dashes = false;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i == 0 || after_dashes) {
      rest.push_back(argv[i]);
      continue;
    }
    if (arg == "--") after_dashes = true;
    std::string value;
    if ((arg == "--ref" || arg == "-ref") && i + 1 < argc) {
      value = argv[++i];
    } else if (absl::StartsWith(arg, "--ref=")) {
      value = arg.substr(6);
    } else if (absl::StartsWith(arg, "-ref=")) {
      value = arg.substr(5);
    } else {
      rest.push_back(argv[i]);
      continue;
    }
    for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipEmpty())) {
      refs->emplace_back(part);
    }
  }
  return rest;
}

absl::StatusOr<std::vector<v1::Image>> ReadReferences(const std::vector<std::string>& paths) {
  std::vector<v1::Image> images;
  for (const std::string& path : paths) {
    absl::StatusOr<v1::Image> image = ReadImageFile(path);
    if (!image.ok()) return image.status();
    images.push_back(*std::move(image));
  }
  return images;
}

// Registers --ref images when given; 0, or the exit status after saying why.
int MaybeRegister(FsrstClient& client, const std::string& identity,
                  const std::vector<std::string>& refs, const CallOptions& options) {
  if (refs.empty()) return 0;
  absl::StatusOr<std::vector<v1::Image>> images = ReadReferences(refs);
  if (!images.ok()) return FailLocal(images.status());
  absl::StatusOr<v1::RegisterReferencesResponse> registered =
      client.RegisterReferences(identity, *std::move(images), options);
  if (!registered.ok()) return Fail(registered.status());
  std::cout << "registered " << registered->reference_count() << " reference(s) of " << identity
            << " (" << registered->feature_bytes() << " feature bytes)\n";
  return 0;
}

int Health(FsrstClient& client) {
  auto status = client.Health(absl::GetFlag(FLAGS_service),
                              OptionsFromFlags(absl::GetFlag(FLAGS_timeout_ms)));
  if (!status.ok()) return Fail(status.status());
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status) << "\n";
  return *status == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : kFailed;
}

int Info(FsrstClient& client) {
  auto info = client.GetServerInfo(OptionsFromFlags(absl::GetFlag(FLAGS_timeout_ms)));
  if (!info.ok()) return Fail(info.status());
  std::cout << "model_name: " << info->model_name() << "\n"
            << "model_version: " << info->model_version() << "\n"
            << "model_trained: " << (info->model_trained() ? "true" : "false") << "\n"
            << "device: " << info->device() << "\n"
            << "lr_size: " << info->lr_size() << "\n"
            << "scale: " << info->scale() << "\n"
            << "reference_size: " << info->reference_size() << "\n"
            << "max_references: " << info->max_references() << "\n"
            << "max_batch_size: " << info->max_batch_size() << "\n"
            << "max_queue_size: " << info->max_queue_size() << "\n"
            << "max_queue_delay_us: " << info->max_queue_delay_us() << "\n"
            << "max_message_bytes: " << info->max_message_bytes() << "\n"
            << "max_stream_frames_in_flight: " << info->max_stream_frames_in_flight() << "\n"
            << "reference_weights: " << (info->reference_weights() ? "true" : "false") << "\n";
  return 0;
}

// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds.
std::string FormatUnixMs(int64_t ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

int Identity(FsrstClient& client, const std::string& identity) {
  if (identity.empty()) return Usage("identity needs --identity");
  auto info = client.GetIdentity(identity, OptionsFromFlags(absl::GetFlag(FLAGS_timeout_ms)));
  if (!info.ok()) return Fail(info.status());
  std::cout << "identity_id: " << info->identity_id() << "\n"
            << "reference_count: " << info->reference_count() << "\n"
            << "feature_bytes: " << info->feature_bytes() << "\n"
            << "registered: " << FormatUnixMs(info->registered_time_unix_ms()) << "\n"
            << "last_used: " << FormatUnixMs(info->last_used_time_unix_ms()) << "\n"
            << "frames_served: " << info->frames_served() << "\n";
  if (info->mean_reference_weights().empty()) {
    std::cout << "mean weights: none yet (no frame served, or the model reports none)\n";
  }
  for (int i = 0; i < info->mean_reference_weights_size(); ++i) {
    std::cout << absl::StrFormat("reference %d: mean weight %.4f\n", i,
                                 info->mean_reference_weights(i));
  }
  return 0;
}

int Register(FsrstClient& client, const std::string& identity,
             const std::vector<std::string>& refs) {
  if (identity.empty()) return Usage("register needs --identity");
  if (refs.empty()) return Usage("register needs at least one --ref");
  return MaybeRegister(client, identity, refs, OptionsFromFlags(absl::GetFlag(FLAGS_timeout_ms)));
}

int Delete(FsrstClient& client, const std::string& identity) {
  if (identity.empty()) return Usage("delete needs --identity");
  const absl::Status status =
      client.DeleteReferences(identity, OptionsFromFlags(absl::GetFlag(FLAGS_timeout_ms)));
  if (!status.ok()) return Fail(status);
  std::cout << "deleted the references of " << identity << "\n";
  return 0;
}

int Enhance(FsrstClient& client, const std::string& identity,
            const std::vector<std::string>& refs) {
  const std::string frame_path = absl::GetFlag(FLAGS_frame);
  const std::string out_path = absl::GetFlag(FLAGS_out);
  if (frame_path.empty() || out_path.empty()) return Usage("enhance needs --frame and --out");
  if (!refs.empty() && identity.empty()) return Usage("--ref needs --identity");
  absl::StatusOr<v1::Encoding> out_encoding = EncodingForPath(out_path);
  if (!out_encoding.ok()) return Usage(std::string(out_encoding.status().message()));
  absl::StatusOr<v1::Image> frame = ReadImageFile(frame_path);
  if (!frame.ok()) return FailLocal(frame.status());
  CallOptions options = OptionsFromFlags(absl::GetFlag(FLAGS_timeout_ms));
  options.output_encoding = *out_encoding;
  if (int failed = MaybeRegister(client, identity, refs, options); failed != 0) return failed;
  absl::StatusOr<v1::EnhanceResponse> answer = client.Enhance(identity, *std::move(frame), options);
  if (!answer.ok()) return Fail(answer.status());
  if (absl::Status status = WriteImageFile(answer->image(), out_path); !status.ok()) {
    return FailLocal(status);
  }
  std::cout << "wrote " << out_path << " (" << answer->image().width() << "x"
            << answer->image().height() << ")\n";
  return 0;
}

absl::StatusOr<std::vector<std::filesystem::path>> ListFrames(const std::string& dir) {
  std::error_code error;
  std::vector<std::filesystem::path> frames;
  for (std::filesystem::directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    const std::string ext = absl::AsciiStrToLower(it->path().extension().string());
    if (it->is_regular_file() &&
        (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".rgb")) {
      frames.push_back(it->path());
    }
  }
  if (error) return absl::NotFoundError(absl::StrCat("cannot list ", dir, ": ", error.message()));
  std::sort(frames.begin(), frames.end());
  return frames;
}

int Stream(FsrstClient& client, const std::string& identity, const std::vector<std::string>& refs) {
  const std::string frames_dir = absl::GetFlag(FLAGS_frames_dir);
  const std::string out_dir = absl::GetFlag(FLAGS_out_dir);
  const int window = absl::GetFlag(FLAGS_window);
  if (frames_dir.empty() || out_dir.empty())
    return Usage("stream needs --frames_dir and --out_dir");
  if (window < 1) return Usage("--window must be at least 1");
  if (!refs.empty() && identity.empty()) return Usage("--ref needs --identity");
  absl::StatusOr<std::vector<std::filesystem::path>> frames = ListFrames(frames_dir);
  if (!frames.ok()) return FailLocal(frames.status());
  if (frames->empty()) {
    return FailLocal(absl::NotFoundError(
        absl::StrCat(frames_dir, ": no frames (.jpg, .jpeg, .png or .rgb files)")));
  }
  std::error_code error;
  std::filesystem::create_directories(out_dir, error);
  if (error) {
    return FailLocal(
        absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", error.message())));
  }

  if (int failed = MaybeRegister(client, identity, refs,
                                 OptionsFromFlags(absl::GetFlag(FLAGS_timeout_ms)));
      failed != 0) {
    return failed;
  }
  CallOptions options = OptionsFromFlags(absl::GetFlag(FLAGS_stream_timeout_ms));
  options.output_encoding = v1::ENCODING_JPEG;
  absl::StatusOr<std::unique_ptr<FrameStream>> stream = client.OpenStream(identity, options);
  if (!stream.ok()) return Fail(stream.status());

  // The library carries the stream over refusals and cuts (a replica that
  // drains or goes away); what reaches here is final. The first error stops
  // the stream: no more frames are sent, and it is reported once.
  const absl::Duration interval = absl::Milliseconds(absl::GetFlag(FLAGS_frame_interval_ms));
  const size_t total = frames->size();
  size_t sent = 0, written = 0;
  std::vector<double> weight_sums;  // per reference, over the frames that carried weights
  int64_t weighted = 0;
  absl::Time next_send = absl::Now();
  absl::Status stopped;
  bool stopped_locally = false;  // by a file here, not by the server's answer
  while (written < total && stopped.ok()) {
    while (sent < total && sent - written < static_cast<size_t>(window) &&
           absl::Now() >= next_send) {
      absl::StatusOr<v1::Image> frame = ReadImageFile((*frames)[sent].string());
      if (!frame.ok()) {
        stopped = frame.status();
        stopped_locally = true;
        break;
      }
      if (stopped = (*stream)->Send(*std::move(frame), sent); !stopped.ok()) break;
      ++sent;
      next_send += interval;
    }
    if (!stopped.ok()) break;
    if (written == sent) {  // paced: nothing in flight until the next frame is due
      absl::SleepFor(next_send - absl::Now());
      continue;
    }
    v1::EnhanceResponse response;
    if (stopped = (*stream)->Receive(&response); !stopped.ok()) break;
    const std::filesystem::path& source = (*frames)[response.sequence_number()];
    if (response.has_error()) {
      stopped = absl::Status(static_cast<absl::StatusCode>(response.error().code()),
                             absl::StrCat(source.string(), ": ", response.error().message()));
      break;
    }
    if (const auto& w = response.reference_weights(); !w.empty()) {
      if (weight_sums.empty()) weight_sums.assign(w.size(), 0.0);
      if (static_cast<size_t>(w.size()) == weight_sums.size()) {  // a re-registration may change it
        for (int i = 0; i < w.size(); ++i) weight_sums[i] += w[i];
        ++weighted;
      }
    }
    const std::string out_path = (std::filesystem::path(out_dir) / source.filename()).string();
    if (stopped = WriteImageFile(response.image(), out_path); !stopped.ok()) {
      stopped_locally = true;
      break;
    }
    ++written;
  }
  // Waits for the answers to frames already sent (not written after an error).
  const absl::Status closed = (*stream)->Close();
  std::cout << "enhanced " << written << " of " << total << " frames into " << out_dir << " ("
            << (*stream)->reopens() << " stream reopens, " << (*stream)->frames_resent()
            << " frames resent after NOT_FOUND"
            << (stopped.ok() ? "" : absl::StrCat("; stopped after ", sent, " sent")) << ")\n";
  if (weighted > 0) {
    double share = 0;
    for (size_t i = 0; i < weight_sums.size(); ++i) {
      share += weight_sums[i] / weighted;
      std::cout << absl::StrFormat("reference %d: mean weight %.4f\n", i,
                                   weight_sums[i] / weighted);
    }
    std::cout << absl::StrFormat("reference share: %.4f (1 - share: the model's own)\n", share);
  }
  if (!stopped.ok()) {
    if (stopped_locally) return FailLocal(stopped);
    Fail(stopped);
    if (stopped.code() == absl::StatusCode::kNotFound && refs.empty()) {
      std::cerr << "fsrst_client: " << identity << " is not registered: register it first ("
                << "fsrst_client register --identity=" << identity
                << " --ref ...), or give --ref to stream\n";
    }
    return kFailed;
  }
  if (!closed.ok()) return Fail(closed);
  return written == total ? 0 : kFailed;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "the fsrst_server client.\n"
      "  fsrst_client health [--service=NAME]\n"
      "  fsrst_client info\n"
      "  fsrst_client register --identity=ID --ref a.jpg --ref b.jpg\n"
      "  fsrst_client enhance --identity=ID --frame f.jpg --out out.jpg [--ref a.jpg ...]\n"
      "  fsrst_client stream --identity=ID [--ref ...] --frames_dir DIR --out_dir DIR\n"
      "  fsrst_client identity --identity=ID\n"
      "  fsrst_client delete --identity=ID\n"
      "Images: .jpg/.jpeg, .png, or square raw RGB8 .rgb. Common flag: --server=host:port");
  std::vector<std::string> refs;
  std::vector<char*> rest = ExtractRefs(argc, argv, &refs);
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(rest.size()), rest.data());
  for (const std::string& ref : absl::GetFlag(FLAGS_ref)) refs.push_back(ref);
  if (positional.size() != 2) {
    return Usage(positional.size() < 2
                     ? "expected a command: health, info, register, enhance, stream, identity or delete"
                     : absl::StrCat("expected one command, got: ",
                                    absl::StrJoin(positional.begin() + 1, positional.end(), " ")));
  }
  const std::string command = positional[1];
  const std::string identity = absl::GetFlag(FLAGS_identity);

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = MakeChannelCredentials(
      {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key)});
  if (!credentials.ok()) return Usage(std::string(credentials.status().message()));
  ClientOptions client_options;
  client_options.api_key = absl::GetFlag(FLAGS_api_key);
  const char* env_key = std::getenv("FSRST_API_KEY");
  if (client_options.api_key.empty() && env_key != nullptr) client_options.api_key = env_key;
  api_key_given = !client_options.api_key.empty();
  std::string server = absl::GetFlag(FLAGS_server);
  const char* env_server = std::getenv("FSRST_SERVER");
  if (server.empty()) server = env_server != nullptr ? env_server : "127.0.0.1:50051";
  FsrstClient client(grpc::CreateCustomChannel(server, *std::move(credentials), args),
                     std::move(client_options));
  if (command == "health") return Health(client);
  if (command == "info") return Info(client);
  if (command == "register") return Register(client, identity, refs);
  if (command == "enhance") return Enhance(client, identity, refs);
  if (command == "stream") return Stream(client, identity, refs);
  if (command == "delete") return Delete(client, identity);
  if (command == "identity") return Identity(client, identity);
  return Usage(absl::StrCat("unknown command \"", command,
                            "\": expected health, info, register, enhance, stream, identity or "
                            "delete"));
}

}  // namespace
}  // namespace fsrst

int main(int argc, char** argv) { return fsrst::Main(argc, argv); }
