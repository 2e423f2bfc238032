#include "clients/cpp/fsrst_client.h"

#include <algorithm>
#include <deque>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/identity_id.h"

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

}  // namespace

absl::Status CheckIdentityId(const std::string& identity_id) {
  return ValidateIdentityId(identity_id, "identity_id");
}

bool IsRetryable(const absl::Status& status) {
  // A stream reset by the peer (a proxy whose upstream went away: INTERNAL), or a
  // call that reached a server as its Shutdown began: gRPC core ends such a call,
  // never run, with CANCELLED "CANCELLED" (grpc/grpc#41785). Never one we
  // cancelled: the stream does not ask the status of a call it gave up.
  return status.code() == absl::StatusCode::kUnavailable ||
         absl::StartsWith(status.message(), "Received RST_STREAM") ||
         (status.code() == absl::StatusCode::kCancelled && status.message() == "CANCELLED");
}

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

template <typename Attempt>
absl::Status FsrstClient::Retrying(absl::Time deadline, Attempt attempt) {
  for (int tries = 1;; ++tries) {
    absl::Status status = attempt();
    if (status.ok() || !IsRetryable(status) || tries >= client_options_.max_attempts) {
      return status;
    }
    const absl::Duration wait = Backoff(tries);
    if (absl::Now() + wait >= deadline) return status;
    calls_retried_.fetch_add(1);
    absl::SleepFor(wait);
  }
}

absl::Duration FsrstClient::Backoff(int retry) const {
  absl::Duration ceiling = client_options_.initial_backoff;
  for (int i = 1; i < retry && ceiling < client_options_.max_backoff; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, client_options_.max_backoff);
  thread_local absl::BitGen random;
  return ceiling * absl::Uniform(random, 0.5, 1.0);
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
    status = Retrying(deadline, [&] {
      grpc::ClientContext context;
      PrepareContext(&context, identity_id, deadline, options);
      return FromGrpcStatus(stub_->RegisterReferences(&context, request, &response));
    });
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
  v1::RegisterReferencesResponse response;
  const absl::Status status = Retrying(deadline, [&] {
    grpc::ClientContext context;
    PrepareContext(&context, identity_id, deadline, options);
    return FromGrpcStatus(stub_->RegisterReferences(&context, request, &response));
  });
  if (!status.ok()) return status;
  identity->generation.fetch_add(1);
  return true;
}

absl::StatusOr<v1::EnhanceResponse> FsrstClient::Enhance(const std::string& identity_id,
                                                         v1::Image frame,
                                                         const CallOptions& options) {
  const absl::Time deadline = DeadlineAfter(options.timeout);
  if (!identity_id.empty()) {
    if (absl::Status valid = CheckIdentityId(identity_id); !valid.ok()) return valid;
  }
  const v1::EnhanceRequest request = MakeEnhanceRequest(identity_id, std::move(frame), options);
  for (int attempt = 0;; ++attempt) {
    const uint64_t generation = Generation(identity_id);
    v1::EnhanceResponse response;
    const absl::Status status = Retrying(deadline, [&] {
      grpc::ClientContext context;
      PrepareContext(&context, identity_id, deadline, options);
      return FromGrpcStatus(stub_->Enhance(&context, request, &response));
    });
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
    v1::DeleteReferencesRequest request;
    request.set_identity_id(identity_id);
    v1::DeleteReferencesResponse response;
    return Retrying(deadline, [&] {
      grpc::ClientContext context;
      PrepareContext(&context, identity_id, deadline, options);
      return FromGrpcStatus(stub_->DeleteReferences(&context, request, &response));
    });
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
  const absl::Time deadline = DeadlineAfter(options.timeout);
  v1::GetServerInfoResponse response;
  const absl::Status status = Retrying(deadline, [&] {
    grpc::ClientContext context;
    PrepareContext(&context, "", deadline, options);
    return FromGrpcStatus(stub_->GetServerInfo(&context, {}, &response));
  });
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::GetIdentityResponse> FsrstClient::GetIdentity(const std::string& identity_id,
                                                                  const CallOptions& options) {
  if (absl::Status valid = CheckIdentityId(identity_id); !valid.ok()) return valid;
  const absl::Time deadline = DeadlineAfter(options.timeout);
  v1::GetIdentityRequest request;
  request.set_identity_id(identity_id);
  v1::GetIdentityResponse response;
  const absl::Status status = Retrying(deadline, [&] {
    grpc::ClientContext context;
    PrepareContext(&context, identity_id, deadline, options);
    return FromGrpcStatus(stub_->GetIdentity(&context, request, &response));
  });
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> FsrstClient::Health(
    const std::string& service, const CallOptions& options) {
  // Not retried: a probe reports the server's state now.
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

namespace {

// One frame of a stream, from Send until Receive hands its answer out.
struct StreamFrame {
  uint64_t caller_sequence = 0;
  // Written to the server; kept until answered, for writing again.
  v1::EnhanceRequest request;
  // request.sequence_number: the stream's own, unique per write.
  uint64_t wire_sequence = 0;
  // The identity's registration count when last written (FsrstClient::Reregister).
  uint64_t generation = 0;
  // The call it was last written on (FrameStream::Impl::attempt_).
  uint64_t attempt = 0;
  // Written again after a NOT_FOUND on the call it is on.
  bool resent = false;
  bool answered = false;
  v1::EnhanceResponse response;
};

}  // namespace

// One EnhanceStream call of a FrameStream. Its state is guarded by the
// stream's mutex (Impl::mu_); gRPC's reactions are forwarded to the Impl.
// Owned by the Impl, which destroys it only after OnDone.
class FrameStream::Call final
    : public grpc::ClientBidiReactor<v1::EnhanceRequest, v1::EnhanceResponse> {
 public:
  Call(Impl* impl, uint64_t attempt) : impl_(impl), attempt(attempt) {}

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  Impl* const impl_;
  const uint64_t attempt;
  grpc::ClientContext context;
  v1::EnhanceResponse read_buffer;  // only touched between StartRead and OnReadDone
  // Guarded by Impl::mu_:
  // Written or queued to write on this call, not yet answered, in write order.
  std::deque<std::shared_ptr<StreamFrame>> wire;
  // Queued to write, in order (a suffix of wire).
  std::deque<std::shared_ptr<StreamFrame>> outbox;
  std::shared_ptr<StreamFrame> writing_frame;  // owns the message being written
  bool writing = false;
  bool started = false;       // StartCall (and its hold) done: writes may be started
  bool broken = false;        // a read or write failed: no more writes
  bool lost = false;          // given up by the stream (cancelled, or to be reopened)
  bool hold_removed = false;  // no more writes will be started
  bool done = false;          // OnDone ran
  absl::Status protocol_error;
};

// The stream's state and its calls. Every gRPC operation is started outside
// mu_ (a reaction may run inline on the starting thread). A hold keeps a call
// alive for writes started from Send/Close/the helper thread; it is removed
// after the half-close, or once the call is broken or lost (no more writes).
// The helper thread re-registers references after NOT_FOUND and opens the
// calls that replace lost ones, after their backoff.
class FrameStream::Impl {
 public:
  Impl(FsrstClient* client, std::string identity_id, const CallOptions& options)
      : client_(client),
        identity_id_(std::move(identity_id)),
        options_(options),
        deadline_(DeadlineAfter(options.timeout)) {}

  ~Impl() {
    std::vector<Call*> to_cancel;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;  // no call is opened from now on
      for (const auto& call : calls_) {
        if (!call->done) to_cancel.push_back(call.get());
      }
    }
    for (Call* call : to_cancel) call->context.TryCancel();
    {
      absl::MutexLock lock(&mu_);
      auto all_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        for (const auto& call : calls_) {
          if (!call->done) return false;
        }
        return true;
      };
      mu_.Await(absl::Condition(&all_done));
    }
    if (helper_thread_.joinable()) helper_thread_.join();
  }

  void Start() {
    Call* call;
    {
      absl::MutexLock lock(&mu_);
      call = OpenCallLocked();
    }
    StartCall(call);
  }

  absl::Status Send(v1::Image image, uint64_t sequence_number) {
    Call* call = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return absl::FailedPreconditionError("FrameStream::Send after Close");
      if (ended_) {
        return final_status_.ok() ? absl::FailedPreconditionError("the stream has ended")
                                  : final_status_;
      }
      auto frame = std::make_shared<StreamFrame>();
      frame->caller_sequence = sequence_number;
      frame->request = client_->MakeEnhanceRequest(identity_id_, std::move(image), options_);
      frames_.push_back(frame);
      // Without a live call, the call that replaces the lost one writes it.
      if (current_ != nullptr) {
        call = current_;
        WriteLocked(call, std::move(frame));
      }
    }
    if (call != nullptr) Advance(call);
    return absl::OkStatus();
  }

  absl::Status Receive(v1::EnhanceResponse* response) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return frames_.empty() || frames_.front()->answered || ended_;
    };
    mu_.Await(absl::Condition(&ready));
    if (frames_.empty()) {
      if (closed_) return absl::OutOfRangeError("end of stream: every frame has been received");
      if (ended_ && !final_status_.ok()) return final_status_;
      return absl::FailedPreconditionError("no frame is waiting for an answer");
    }
    std::shared_ptr<StreamFrame> frame = frames_.front();
    if (!frame->answered) {
      if (!final_status_.ok()) return final_status_;
      return absl::InternalError(absl::StrCat(
          "the server ended the stream without answering frame ", frame->caller_sequence));
    }
    frames_.pop_front();
    *response = std::move(frame->response);
    response->set_sequence_number(frame->caller_sequence);
    return absl::OkStatus();
  }

  absl::Status Close() {
    Call* call;
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
      call = current_;
    }
    if (call != nullptr) Advance(call);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&ended_));
    return final_status_;
  }

  uint64_t frames_resent() const {
    absl::MutexLock lock(&mu_);
    return frames_resent_;
  }

  uint64_t reopens() const {
    absl::MutexLock lock(&mu_);
    return reopens_;
  }

  void OnReadDone(Call* call, bool ok) {
    if (!ok) {
      {
        absl::MutexLock lock(&mu_);
        call->broken = true;
      }
      Advance(call);
      return;
    }
    bool cancel = false;
    bool read_on = true;
    {
      absl::MutexLock lock(&mu_);
      v1::EnhanceResponse& answer = call->read_buffer;
      if (call->lost) {
        read_on = false;  // cancelled: what it still answers is written on the next call
      } else if (call->wire.empty() ||
                 call->wire.front()->wire_sequence != answer.sequence_number()) {
        call->protocol_error = absl::InternalError(absl::StrCat(
            "EnhanceStream answered sequence number ", answer.sequence_number(),
            call->wire.empty() ? std::string(" with no frame outstanding")
                               : absl::StrCat(", expected ", call->wire.front()->wire_sequence)));
        cancel = true;
      } else {
        std::shared_ptr<StreamFrame> frame = std::move(call->wire.front());
        call->wire.pop_front();
        const absl::Status frame_status =
            answer.has_error() ? absl::Status(static_cast<absl::StatusCode>(answer.error().code()),
                                              answer.error().message())
                               : absl::OkStatus();
        const bool kept = !identity_id_.empty() && client_->Generation(identity_id_) != 0;
        if (IsRetryable(frame_status)) {
          // The server refuses frames (it drains): the later ones are refused
          // too, every earlier one is answered. Written again on a new call.
          cancel = LoseCallLocked(call, frame_status);
        } else if (frame_status.code() == absl::StatusCode::kNotFound && kept &&
                   !frame->resent) {
          frame->resent = true;
          frame->response = std::move(answer);  // the answer if nothing can be registered
          awaiting_registration_.push_back(std::move(frame));
          EnsureHelperLocked();
        } else if (frame_status.code() == absl::StatusCode::kNotFound && kept &&
                   CanReopenLocked()) {
          // Registered again, written again, still unknown: the registration
          // reached another replica than this call (a proxy's view of the live
          // replicas changed). A new call goes where the identity is.
          cancel = LoseCallLocked(call, frame_status);
        } else {
          frame->response = std::move(answer);
          frame->answered = true;
          frame->request.Clear();
          reopens_in_a_row_ = 0;
        }
      }
      answer.Clear();
      if (cancel) read_on = false;
    }
    if (cancel) call->context.TryCancel();
    Advance(call);
    if (read_on) call->StartRead(&call->read_buffer);
  }

  void OnWriteDone(Call* call, bool ok) {
    {
      absl::MutexLock lock(&mu_);
      call->writing = false;
      call->writing_frame.reset();
      if (!ok) call->broken = true;  // the call is over; its status comes with OnDone
    }
    Advance(call);
  }

  void OnDone(Call* call, const grpc::Status& grpc_status) {
    absl::MutexLock lock(&mu_);
    if (call == current_) {  // it ended by itself, not lost by the stream
      const absl::Status status =
          call->protocol_error.ok() ? FromGrpcStatus(grpc_status) : call->protocol_error;
      if (IsRetryable(status)) {
        LoseCallLocked(call, status);  // already over: nothing to cancel
      } else {
        current_ = nullptr;
        final_status_ = status;
        ended_ = true;
      }
    }
    call->done = true;  // last: the destructor may run once mu_ is released
  }

 private:
  // A new call, current from now on, with every frame not yet answered queued
  // on it in Send order. Start it with StartCall() after releasing mu_.
  Call* OpenCallLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    calls_.push_back(std::make_unique<Call>(this, ++attempt_));
    Call* call = calls_.back().get();
    client_->PrepareContext(&call->context, identity_id_, deadline_, options_);
    current_ = call;
    for (const std::shared_ptr<StreamFrame>& frame : frames_) {
      if (frame->answered) continue;
      frame->resent = false;  // another server: NOT_FOUND may come once more
      WriteLocked(call, frame);
    }
    return call;
  }

  void StartCall(Call* call) ABSL_LOCKS_EXCLUDED(mu_) {
    client_->stub_->async()->EnhanceStream(&call->context, call);
    call->AddHold();
    call->StartRead(&call->read_buffer);
    call->StartCall();
    {
      absl::MutexLock lock(&mu_);
      call->started = true;
    }
    Advance(call);
  }

  // Gives `call` up: a new one is opened after a backoff, unless the stream
  // has reopened max_stream_reopens times in a row or the deadline would pass,
  // in which case the stream ends with `status`. Frames awaiting a
  // re-registration are written on the new call instead. Returns whether the
  // call should be cancelled (it is still running).
  bool LoseCallLocked(Call* call, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    call->lost = true;
    call->outbox.clear();
    current_ = nullptr;
    awaiting_registration_.clear();
    if (!CanReopenLocked()) {
      final_status_ = status;
      ended_ = true;
    } else {
      ++reopens_in_a_row_;
      reopen_at_ = absl::Now() + next_backoff_;
      reopen_pending_ = true;
      EnsureHelperLocked();
    }
    return !call->done;
  }

  // Whether a lost call may be replaced: within max_stream_reopens in a row
  // and the deadline. Draws the backoff the reopen would wait.
  bool CanReopenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    next_backoff_ = client_->Backoff(reopens_in_a_row_ + 1);
    return !stopping_ && reopens_in_a_row_ < client_->client_options_.max_stream_reopens &&
           absl::Now() + next_backoff_ < deadline_;
  }

  void EnsureHelperLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!helper_thread_.joinable()) helper_thread_ = std::thread([this] { HelperLoop(); });
  }

  // Queues `frame` for writing (again) on `call` with a fresh wire sequence number.
  void WriteLocked(Call* call, std::shared_ptr<StreamFrame> frame)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    frame->wire_sequence = next_wire_sequence_++;
    frame->request.set_sequence_number(frame->wire_sequence);
    frame->generation = client_->Generation(identity_id_);
    frame->attempt = call->attempt;
    call->wire.push_back(frame);
    call->outbox.push_back(std::move(frame));
  }

  // Starts the call's next write, its half-close, or gives up its hold, as
  // the state allows; decided under mu_, started after it is released.
  void Advance(Call* call) ABSL_LOCKS_EXCLUDED(mu_) {
    const v1::EnhanceRequest* to_write = nullptr;
    bool writes_done = false;
    bool remove_hold = false;
    {
      absl::MutexLock lock(&mu_);
      if (!call->started || call->hold_removed || call->writing) return;
      if (call->broken || call->lost) {
        call->outbox.clear();
        remove_hold = true;
      } else if (!call->outbox.empty()) {
        call->writing_frame = std::move(call->outbox.front());
        call->outbox.pop_front();
        call->writing = true;
        to_write = &call->writing_frame->request;
      } else if (closed_ && call->wire.empty() && awaiting_registration_.empty()) {
        writes_done = true;
        remove_hold = true;
      }
      if (remove_hold) call->hold_removed = true;
    }
    if (to_write != nullptr) call->StartWrite(to_write);
    if (writes_done) call->StartWritesDone();
    if (remove_hold) call->RemoveHold();
  }

  // Re-registers the references for frames answered NOT_FOUND, in the order
  // the answers came, and writes them again; opens the calls that replace
  // lost ones when their backoff is over.
  void HelperLoop() {
    while (true) {
      std::shared_ptr<StreamFrame> frame;
      Call* reopened = nullptr;
      {
        absl::MutexLock lock(&mu_);
        auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || !awaiting_registration_.empty() || reopen_pending_;
        };
        mu_.Await(absl::Condition(&has_work));
        if (stopping_) return;
        if (reopen_pending_) {
          auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
          mu_.AwaitWithDeadline(absl::Condition(&stopping), reopen_at_);
          if (stopping_) return;
          reopen_pending_ = false;
          ++reopens_;
          reopened = OpenCallLocked();
        } else {
          // Stays in awaiting_registration_ meanwhile, so the call does not half-close.
          frame = awaiting_registration_.front();
        }
      }
      if (reopened != nullptr) {
        StartCall(reopened);
        continue;
      }
      const absl::Time deadline = std::min(deadline_, absl::Now() + kStreamReregisterTimeout);
      absl::StatusOr<bool> again =
          client_->Reregister(identity_id_, frame->generation, deadline, options_);
      Call* call = nullptr;
      {
        absl::MutexLock lock(&mu_);
        // A lost call took the frame along: the new call writes it again.
        if (awaiting_registration_.empty() || awaiting_registration_.front() != frame ||
            current_ == nullptr || current_->attempt != frame->attempt) {
          continue;
        }
        awaiting_registration_.pop_front();
        call = current_;
        if (again.ok() && *again) {
          ++frames_resent_;
          WriteLocked(call, std::move(frame));
        } else {
          if (!again.ok()) {
            v1::FrameError* error = frame->response.mutable_error();
            error->set_code(static_cast<int>(again.status().code()));
            error->set_message(absl::StrCat("registering the references of ", identity_id_,
                                            " again: ", again.status().message()));
          }  // else the client keeps none: the server's NOT_FOUND stands
          frame->answered = true;
          frame->request.Clear();
        }
      }
      Advance(call);
    }
  }

  FsrstClient* const client_;
  const std::string identity_id_;
  const CallOptions options_;
  const absl::Time deadline_;
  std::thread helper_thread_;  // started at the first NOT_FOUND or loss, under mu_

  mutable absl::Mutex mu_;
  // Sent and not yet received, in Send order; front is the next Receive.
  std::deque<std::shared_ptr<StreamFrame>> frames_ ABSL_GUARDED_BY(mu_);
  // Answered NOT_FOUND on the current call, waiting for the references to be registered again.
  std::deque<std::shared_ptr<StreamFrame>> awaiting_registration_ ABSL_GUARDED_BY(mu_);
  // Every call opened, in order; destroyed with the stream, after their OnDone.
  std::vector<std::unique_ptr<Call>> calls_ ABSL_GUARDED_BY(mu_);
  Call* current_ ABSL_GUARDED_BY(mu_) = nullptr;  // the live call; null while reopening
  uint64_t attempt_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_wire_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t frames_resent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reopens_ ABSL_GUARDED_BY(mu_) = 0;
  int reopens_in_a_row_ ABSL_GUARDED_BY(mu_) = 0;  // since a frame was last answered
  absl::Time reopen_at_ ABSL_GUARDED_BY(mu_);
  absl::Duration next_backoff_ ABSL_GUARDED_BY(mu_);  // drawn by CanReopenLocked
  bool reopen_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;    // Close() was called
  bool ended_ ABSL_GUARDED_BY(mu_) = false;     // no call will answer any more frames
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // being destroyed: open nothing, help no more
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
};

void FrameStream::Call::OnReadDone(bool ok) { impl_->OnReadDone(this, ok); }
void FrameStream::Call::OnWriteDone(bool ok) { impl_->OnWriteDone(this, ok); }
void FrameStream::Call::OnDone(const grpc::Status& status) { impl_->OnDone(this, status); }

absl::StatusOr<std::unique_ptr<FrameStream>> FsrstClient::OpenStream(const std::string& identity_id,
                                                                     const CallOptions& options) {
  if (!identity_id.empty()) {
    if (absl::Status valid = CheckIdentityId(identity_id); !valid.ok()) return valid;
  }
  auto impl = std::make_unique<FrameStream::Impl>(this, identity_id, options);
  impl->Start();
  return std::unique_ptr<FrameStream>(new FrameStream(std::move(impl)));
}

FrameStream::FrameStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FrameStream::~FrameStream() = default;

absl::Status FrameStream::Send(v1::Image frame, uint64_t sequence_number) {
  return impl_->Send(std::move(frame), sequence_number);
}

absl::Status FrameStream::Receive(v1::EnhanceResponse* response) {
  return impl_->Receive(response);
}

absl::Status FrameStream::Close() { return impl_->Close(); }

uint64_t FrameStream::frames_resent() const { return impl_->frames_resent(); }

uint64_t FrameStream::reopens() const { return impl_->reopens(); }

}  // namespace fsrst
