#include "clients/cpp/fsrst_client.h"

#include <algorithm>
#include <deque>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace fsrst {
namespace {

// A re-registration inside a stream waits at most this, even when the stream
// has no deadline, so a hung server cannot hold a closing stream forever.
constexpr absl::Duration kStreamReregisterTimeout = absl::Seconds(30);

// grpc::StatusCode and absl::StatusCode share their numbers (both are google.rpc.Code).
absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Time DeadlineAfter(absl::Duration timeout) {
  return timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
}

// Metadata values must be printable ASCII; anything else would fail in the
// transport with a less helpful message.
absl::Status CheckIdentityId(const std::string& identity_id) {
  for (const char c : identity_id) {
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "identity_id: expected printable ASCII (the server accepts [A-Za-z0-9._:@-])");
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------- FsrstClient

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ChannelSecurity& security) {
  if (security.tls_ca_path.empty() && security.tls_cert_path.empty() &&
      security.tls_key_path.empty()) {
    return grpc::InsecureChannelCredentials();
  }
  if (security.tls_ca_path.empty() ||
      security.tls_cert_path.empty() != security.tls_key_path.empty()) {
    return absl::InvalidArgumentError(
        "tls_ca_path: expected the CA of the server's certificate whenever TLS is used; "
        "tls_cert_path and tls_key_path: expected both (mTLS) or neither");
  }
  grpc::SslCredentialsOptions options;
  const std::pair<const std::string*, std::string*> files[] = {
      {&security.tls_ca_path, &options.pem_root_certs},
      {&security.tls_cert_path, &options.pem_cert_chain},
      {&security.tls_key_path, &options.pem_private_key}};
  for (const auto& [path, pem] : files) {
    if (path->empty()) continue;
    std::ifstream file(*path, std::ios::binary);
    if (!file) return absl::NotFoundError(absl::StrCat("cannot open TLS file ", *path));
    std::stringstream text;
    text << file.rdbuf();
    *pem = text.str();
    if (pem->find("-----BEGIN ") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(*path, ": expected a PEM file"));
    }
  }
  return grpc::SslCredentials(options);
}

FsrstClient::FsrstClient(std::shared_ptr<grpc::ChannelInterface> channel,
                         ClientOptions client_options)
    : channel_(std::move(channel)),
      client_options_(std::move(client_options)),
      stub_(v1::FaceSuperResolution::NewStub(channel_)),
      health_stub_(grpc::health::v1::Health::NewStub(channel_)) {}

FsrstClient::~FsrstClient() = default;

void FsrstClient::PrepareContext(grpc::ClientContext* context, const std::string& identity_id,
                                 absl::Time deadline, const CallOptions& options) const {
  if (!identity_id.empty()) context->AddMetadata(kIdentityMetadataKey, identity_id);
  if (!client_options_.api_key.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", client_options_.api_key));
  }
  if (deadline != absl::InfiniteFuture()) context->set_deadline(absl::ToChronoTime(deadline));
  context->set_wait_for_ready(options.wait_for_ready);
}

v1::EnhanceRequest FsrstClient::MakeEnhanceRequest(const std::string& identity_id, v1::Image frame,
                                                   const CallOptions& options) const {
  v1::EnhanceRequest request;
  request.set_identity_id(identity_id);
  *request.mutable_frame() = std::move(frame);
  request.set_output_encoding(options.output_encoding);
  request.set_jpeg_quality(options.jpeg_quality);
  request.set_timeout_ms(options.frame_timeout_ms);
  return request;
}

std::shared_ptr<FsrstClient::Identity> FsrstClient::FindIdentity(
    const std::string& identity_id) const {
  absl::MutexLock lock(&mu_);
  auto it = identities_.find(identity_id);
  return it == identities_.end() ? nullptr : it->second;
}

uint64_t FsrstClient::Generation(const std::string& identity_id) const {
  std::shared_ptr<Identity> identity = FindIdentity(identity_id);
  return identity == nullptr ? 0 : identity->generation.load();
}

bool FsrstClient::HasReferences(const std::string& identity_id) const {
  std::shared_ptr<Identity> identity = FindIdentity(identity_id);
  if (identity == nullptr) return false;
  absl::MutexLock lock(&identity->mu);
  return !identity->references.empty();
}

absl::StatusOr<v1::RegisterReferencesResponse> FsrstClient::RegisterReferences(
    const std::string& identity_id, std::vector<v1::Image> references, const CallOptions& options) {
  const absl::Time deadline = DeadlineAfter(options.timeout);
  if (absl::Status valid = CheckIdentityId(identity_id); !valid.ok()) return valid;
  std::shared_ptr<Identity> identity;
  {
    absl::MutexLock lock(&mu_);
    std::shared_ptr<Identity>& slot = identities_[identity_id];
    if (slot == nullptr) slot = std::make_shared<Identity>();
    identity = slot;
  }
  v1::RegisterReferencesRequest request;
  request.set_identity_id(identity_id);
  for (v1::Image& image : references) *request.add_references() = std::move(image);
  v1::RegisterReferencesResponse response;
  absl::Status status;
  bool keeps_nothing = false;
  {
    absl::MutexLock lock(&identity->mu);
    grpc::ClientContext context;
    PrepareContext(&context, identity_id, deadline, options);
    status = FromGrpcStatus(stub_->RegisterReferences(&context, request, &response));
    if (status.ok()) {
      identity->references.assign(std::make_move_iterator(request.mutable_references()->begin()),
                                  std::make_move_iterator(request.mutable_references()->end()));
      identity->generation.fetch_add(1);
    }
    keeps_nothing = identity->references.empty();
  }
  if (keeps_nothing) {
    // Never accepted: drop the empty entry, unless it is in use (a registration
    // of the same identity under way) or was replaced meanwhile.
    absl::MutexLock lock(&mu_);
    auto it = identities_.find(identity_id);
    if (it != identities_.end() && it->second == identity && identity->mu.TryLock()) {
      if (identity->references.empty()) identities_.erase(it);
      identity->mu.Unlock();
    }
  }
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<bool> FsrstClient::Reregister(const std::string& identity_id,
                                             uint64_t seen_generation, absl::Time deadline,
                                             const CallOptions& options) {
  std::shared_ptr<Identity> identity = FindIdentity(identity_id);
  if (identity == nullptr) return false;
  absl::MutexLock lock(&identity->mu);
  if (identity->references.empty()) return false;
  // Someone registered since the frame was sent: the server has them again.
  if (identity->generation.load() != seen_generation) return true;
  v1::RegisterReferencesRequest request;
  request.set_identity_id(identity_id);
  for (const v1::Image& image : identity->references) *request.add_references() = image;
  grpc::ClientContext context;
  PrepareContext(&context, identity_id, deadline, options);
  v1::RegisterReferencesResponse response;
  const absl::Status status =
      FromGrpcStatus(stub_->RegisterReferences(&context, request, &response));
  if (!status.ok()) return status;
  identity->generation.fetch_add(1);
  return true;
}

absl::StatusOr<v1::EnhanceResponse> FsrstClient::Enhance(const std::string& identity_id,
                                                         v1::Image frame,
                                                         const CallOptions& options) {
  const absl::Time deadline = DeadlineAfter(options.timeout);
  if (absl::Status valid = CheckIdentityId(identity_id); !valid.ok()) return valid;
  const v1::EnhanceRequest request = MakeEnhanceRequest(identity_id, std::move(frame), options);
  for (int attempt = 0;; ++attempt) {
    const uint64_t generation = Generation(identity_id);
    grpc::ClientContext context;
    PrepareContext(&context, identity_id, deadline, options);
    v1::EnhanceResponse response;
    const absl::Status status = FromGrpcStatus(stub_->Enhance(&context, request, &response));
    if (status.ok()) return response;
    if (status.code() != absl::StatusCode::kNotFound || identity_id.empty() || attempt > 0) {
      return status;
    }
    absl::StatusOr<bool> again = Reregister(identity_id, generation, deadline, options);
    if (!again.ok()) return again.status();
    if (!*again) return status;  // nothing kept to register: the server's NOT_FOUND stands
  }
}

absl::Status FsrstClient::DeleteReferences(const std::string& identity_id,
                                           const CallOptions& options) {
  const absl::Time deadline = DeadlineAfter(options.timeout);
  if (absl::Status valid = CheckIdentityId(identity_id); !valid.ok()) return valid;
  std::shared_ptr<Identity> identity;
  {
    absl::MutexLock lock(&mu_);
    auto it = identities_.find(identity_id);
    if (it != identities_.end()) {
      identity = it->second;
      identities_.erase(it);
    }
  }
  auto delete_on_server = [&]() {
    grpc::ClientContext context;
    PrepareContext(&context, identity_id, deadline, options);
    v1::DeleteReferencesRequest request;
    request.set_identity_id(identity_id);
    v1::DeleteReferencesResponse response;
    return FromGrpcStatus(stub_->DeleteReferences(&context, request, &response));
  };
  if (identity == nullptr) return delete_on_server();
  // Held across the call so no re-registration of this identity can reach
  // the server after the deletion.
  absl::MutexLock lock(&identity->mu);
  const bool had_references = !identity->references.empty();
  identity->references.clear();
  const absl::Status status = delete_on_server();
  if (status.code() == absl::StatusCode::kNotFound && had_references) return absl::OkStatus();
  return status;
}

absl::StatusOr<v1::GetServerInfoResponse> FsrstClient::GetServerInfo(const CallOptions& options) {
  grpc::ClientContext context;
  PrepareContext(&context, "", DeadlineAfter(options.timeout), options);
  v1::GetServerInfoResponse response;
  const absl::Status status = FromGrpcStatus(stub_->GetServerInfo(&context, {}, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> FsrstClient::Health(
    const std::string& service, const CallOptions& options) {
  grpc::ClientContext context;
  PrepareContext(&context, "", DeadlineAfter(options.timeout), options);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const absl::Status status = FromGrpcStatus(health_stub_->Check(&context, request, &response));
  if (!status.ok()) return status;
  return response.status();
}

// ---------------------------------------------------------------- FrameStream

// The stream's state and its gRPC reactor. Every gRPC operation is started
// outside mu_ (a reaction may run inline on the starting thread). A hold keeps
// the call alive for writes started from Send/Close/the repair thread; it is
// removed after the half-close, or once the call is broken (no more writes).
class FrameStream::Reactor final
    : public grpc::ClientBidiReactor<v1::EnhanceRequest, v1::EnhanceResponse> {
 public:
  Reactor(FsrstClient* client, std::string identity_id, const CallOptions& options)
      : client_(client),
        identity_id_(std::move(identity_id)),
        options_(options),
        deadline_(DeadlineAfter(options.timeout)) {
    client_->PrepareContext(&context_, identity_id_, deadline_, options_);
  }

  ~Reactor() override {
    bool cancel;
    {
      absl::MutexLock lock(&mu_);
      cancel = !call_done_;
    }
    if (cancel) context_.TryCancel();
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&call_done_));
      stopping_ = true;
    }
    if (repair_thread_.joinable()) repair_thread_.join();
  }

  void Start() {
    client_->stub_->async()->EnhanceStream(&context_, this);
    AddHold();
    StartRead(&read_buffer_);
    StartCall();
  }

  absl::Status Send(v1::Image image, uint64_t sequence_number) {
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return absl::FailedPreconditionError("FrameStream::Send after Close");
      if (broken_) {
        mu_.Await(absl::Condition(&call_done_));
        return call_status_.ok() ? absl::FailedPreconditionError("the stream has ended")
                                 : call_status_;
      }
      auto frame = std::make_shared<Frame>();
      frame->caller_sequence = sequence_number;
      frame->request = client_->MakeEnhanceRequest(identity_id_, std::move(image), options_);
      frames_.push_back(frame);
      WriteLocked(std::move(frame));
    }
    Advance();
    return absl::OkStatus();
  }

  absl::Status Receive(v1::EnhanceResponse* response) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return frames_.empty() || frames_.front()->answered || call_done_;
    };
    mu_.Await(absl::Condition(&ready));
    if (frames_.empty()) {
      if (closed_) return absl::OutOfRangeError("end of stream: every frame has been received");
      return absl::FailedPreconditionError("no frame is waiting for an answer");
    }
    std::shared_ptr<Frame> frame = frames_.front();
    if (!frame->answered) {
      if (!call_status_.ok()) return call_status_;
      return absl::InternalError(absl::StrCat(
          "the server ended the stream without answering frame ", frame->caller_sequence));
    }
    frames_.pop_front();
    *response = std::move(frame->response);
    response->set_sequence_number(frame->caller_sequence);
    return absl::OkStatus();
  }

  absl::Status Close() {
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
    }
    Advance();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&call_done_));
    return call_status_;
  }

  uint64_t frames_resent() const {
    absl::MutexLock lock(&mu_);
    return frames_resent_;
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        absl::MutexLock lock(&mu_);
        broken_ = true;
      }
      Advance();
      return;
    }
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      if (wire_.empty() || wire_.front()->wire_sequence != read_buffer_.sequence_number()) {
        protocol_error_ = absl::InternalError(absl::StrCat(
            "EnhanceStream answered sequence number ", read_buffer_.sequence_number(),
            wire_.empty() ? std::string(" with no frame outstanding")
                          : absl::StrCat(", expected ", wire_.front()->wire_sequence)));
        cancel = true;
      } else {
        std::shared_ptr<Frame> frame = std::move(wire_.front());
        wire_.pop_front();
        frame->response = std::move(read_buffer_);
        const bool not_found =
            frame->response.has_error() &&
            frame->response.error().code() == static_cast<int>(grpc::StatusCode::NOT_FOUND);
        if (not_found && !frame->resent && !identity_id_.empty() &&
            client_->Generation(identity_id_) != 0) {
          frame->resent = true;
          awaiting_registration_.push_back(std::move(frame));
          if (!repair_thread_.joinable()) repair_thread_ = std::thread([this] { RepairLoop(); });
        } else {
          AnswerLocked(frame.get());
        }
      }
      read_buffer_.Clear();
    }
    if (cancel) context_.TryCancel();
    Advance();
    StartRead(&read_buffer_);
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      writing_frame_.reset();
      if (!ok) broken_ = true;  // the call is over; its status comes with OnDone
    }
    Advance();
  }

  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    call_status_ = protocol_error_.ok() ? FromGrpcStatus(status) : protocol_error_;
    call_done_ = true;  // last: the destructor may run once mu_ is released
  }

 private:
  struct Frame {
    uint64_t caller_sequence = 0;
    // Written to the server; kept until answered, for a second write.
    v1::EnhanceRequest request;
    // request.sequence_number: the stream's own, unique per write.
    uint64_t wire_sequence = 0;
    // The identity's registration count when written (FsrstClient::Reregister).
    uint64_t generation = 0;
    bool resent = false;
    bool answered = false;
    v1::EnhanceResponse response;
  };

  // Queues `frame` for writing (again) with a fresh wire sequence number.
  void WriteLocked(std::shared_ptr<Frame> frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    frame->wire_sequence = next_wire_sequence_++;
    frame->request.set_sequence_number(frame->wire_sequence);
    frame->generation = client_->Generation(identity_id_);
    wire_.push_back(frame);
    outbox_.push_back(std::move(frame));
  }

  void AnswerLocked(Frame* frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    frame->answered = true;
    frame->request.Clear();
  }

  // Starts the next write, the half-close, or gives up the hold, as the
  // state allows; decided under mu_, started after it is released.
  void Advance() ABSL_LOCKS_EXCLUDED(mu_) {
    const v1::EnhanceRequest* to_write = nullptr;
    bool writes_done = false;
    bool remove_hold = false;
    {
      absl::MutexLock lock(&mu_);
      if (hold_removed_ || writing_) return;
      if (broken_) {
        outbox_.clear();
        remove_hold = true;
      } else if (!outbox_.empty()) {
        writing_frame_ = std::move(outbox_.front());
        outbox_.pop_front();
        writing_ = true;
        to_write = &writing_frame_->request;
      } else if (closed_ && wire_.empty() && awaiting_registration_.empty()) {
        writes_done = true;
        remove_hold = true;
      }
      if (remove_hold) hold_removed_ = true;
    }
    if (to_write != nullptr) StartWrite(to_write);
    if (writes_done) StartWritesDone();
    if (remove_hold) RemoveHold();
  }

  // The repair thread: registers the references again for frames answered
  // NOT_FOUND, in the order the answers came, and writes them again.
  void RepairLoop() {
    while (true) {
      std::shared_ptr<Frame> frame;
      {
        absl::MutexLock lock(&mu_);
        auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || !awaiting_registration_.empty();
        };
        mu_.Await(absl::Condition(&has_work));
        if (stopping_) return;
        // Stays in awaiting_registration_ meanwhile, so the stream does not half-close.
        frame = awaiting_registration_.front();
      }
      const absl::Time deadline = std::min(deadline_, absl::Now() + kStreamReregisterTimeout);
      absl::StatusOr<bool> again =
          client_->Reregister(identity_id_, frame->generation, deadline, options_);
      {
        absl::MutexLock lock(&mu_);
        awaiting_registration_.pop_front();
        if (broken_) continue;  // never answered: Receive reports the call's status
        if (again.ok() && *again) {
          ++frames_resent_;
          WriteLocked(std::move(frame));
        } else {
          if (!again.ok()) {
            v1::FrameError* error = frame->response.mutable_error();
            error->set_code(static_cast<int>(again.status().code()));
            error->set_message(absl::StrCat("registering the references of ", identity_id_,
                                            " again: ", again.status().message()));
          }  // else the client keeps none: the server's NOT_FOUND stands
          AnswerLocked(frame.get());
        }
      }
      Advance();
    }
  }

  FsrstClient* const client_;
  const std::string identity_id_;
  const CallOptions options_;
  const absl::Time deadline_;
  grpc::ClientContext context_;
  v1::EnhanceResponse read_buffer_;  // only touched between StartRead and OnReadDone
  std::thread repair_thread_;        // started at the first NOT_FOUND, under mu_

  mutable absl::Mutex mu_;
  // Sent and not yet received, in Send order; front is the next Receive.
  std::deque<std::shared_ptr<Frame>> frames_ ABSL_GUARDED_BY(mu_);
  // Written or queued to write, not yet answered, in write order.
  std::deque<std::shared_ptr<Frame>> wire_ ABSL_GUARDED_BY(mu_);
  // Queued to write, in order (a suffix of wire_).
  std::deque<std::shared_ptr<Frame>> outbox_ ABSL_GUARDED_BY(mu_);
  // Answered NOT_FOUND, waiting for the references to be registered again.
  std::deque<std::shared_ptr<Frame>> awaiting_registration_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Frame> writing_frame_ ABSL_GUARDED_BY(mu_);  // owns the message being written
  uint64_t next_wire_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t frames_resent_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;        // Close() was called
  bool broken_ ABSL_GUARDED_BY(mu_) = false;        // a read or write failed: no more writes
  bool hold_removed_ ABSL_GUARDED_BY(mu_) = false;  // no more writes will be started
  bool call_done_ ABSL_GUARDED_BY(mu_) = false;     // OnDone ran
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;      // the repair thread should exit
  absl::Status protocol_error_ ABSL_GUARDED_BY(mu_);
  absl::Status call_status_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<FrameStream>> FsrstClient::OpenStream(const std::string& identity_id,
                                                                     const CallOptions& options) {
  if (absl::Status valid = CheckIdentityId(identity_id); !valid.ok()) return valid;
  auto reactor = std::make_unique<FrameStream::Reactor>(this, identity_id, options);
  reactor->Start();
  return std::unique_ptr<FrameStream>(new FrameStream(std::move(reactor)));
}

FrameStream::FrameStream(std::unique_ptr<Reactor> reactor) : reactor_(std::move(reactor)) {}

FrameStream::~FrameStream() = default;

absl::Status FrameStream::Send(v1::Image frame, uint64_t sequence_number) {
  return reactor_->Send(std::move(frame), sequence_number);
}

absl::Status FrameStream::Receive(v1::EnhanceResponse* response) {
  return reactor_->Receive(response);
}

absl::Status FrameStream::Close() { return reactor_->Close(); }

uint64_t FrameStream::frames_resent() const { return reactor_->frames_resent(); }

}  // namespace fsrst
