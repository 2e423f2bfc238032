#include "store/redis_reference_store.h"

#include <hiredis/hiredis.h>
#include <openssl/rand.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <iostream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fsrst {
namespace {

timeval ToTimeval(int64_t ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

std::string RandomHex(int bytes) {
  std::string raw(static_cast<size_t>(bytes), '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) != 1) {
    // Uniqueness, not secrecy, is what matters here; fall back to the clock.
    raw = absl::StrCat(absl::ToUnixNanos(absl::Now()));
  }
  return absl::BytesToHexString(raw);
}

// Milliseconds of a ttl, at least 1 (PEXPIRE 0 would delete the key).
std::string TtlMs(absl::Duration ttl) {
  return absl::StrCat(std::max<int64_t>(1, absl::ToInt64Milliseconds(ttl)));
}

}  // namespace

const char* StoreOperationName(StoreOperation operation) {
  switch (operation) {
    case StoreOperation::kPut:
      return "put";
    case StoreOperation::kGet:
      return "get";
    case StoreOperation::kDelete:
      return "delete";
    case StoreOperation::kValidate:
      return "validate";
    case StoreOperation::kGetFeatures:
      return "get_features";
    case StoreOperation::kPutFeatures:
      return "put_features";
  }
  return "unknown";
}

absl::StatusOr<RedisAddress> ParseRedisUrl(absl::string_view url, absl::string_view flag) {
  const auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", url, ": ", why,
                                                   "; expected redis://host:port"));
  };
  constexpr absl::string_view kScheme = "redis://";
  if (!absl::StartsWith(url, kScheme)) return invalid("not a redis:// URL");
  absl::string_view rest = url.substr(kScheme.size());
  if (absl::StrContains(rest, '@')) {
    return invalid("credentials do not belong in the URL (use --reference_store_password_file)");
  }
  if (absl::StrContains(rest, '/') || absl::StrContains(rest, '?')) {
    return invalid("a path or query is not supported");
  }
  RedisAddress address;
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos) {
    address.host = std::string(rest);
  } else {
    address.host = std::string(rest.substr(0, colon));
    if (!absl::SimpleAtoi(rest.substr(colon + 1), &address.port) || address.port < 1 ||
        address.port > 65535) {
      return invalid("the port must be 1..65535");
    }
  }
  if (address.host.empty()) return invalid("no host");
  return address;
}

void RedisReferenceStore::ContextFree::operator()(redisContext* context) const {
  redisFree(context);
}
void RedisReferenceStore::ReplyFree::operator()(void* reply) const { freeReplyObject(reply); }

// Owned replies of one pipeline, in command order.
class RedisReferenceStore::Replies {
 public:
  void Add(redisReply* reply) { replies_.emplace_back(reply); }
  const redisReply& operator[](size_t i) const {
    return *static_cast<const redisReply*>(replies_[i].get());
  }
  size_t size() const { return replies_.size(); }

 private:
  std::vector<std::unique_ptr<void, ReplyFree>> replies_;
};

absl::StatusOr<std::unique_ptr<RedisReferenceStore>> RedisReferenceStore::Create(
    RedisStoreOptions options, ValueSealer sealer) {
  absl::StatusOr<RedisAddress> address = ParseRedisUrl(options.url, "reference_store");
  if (!address.ok()) return address.status();
  return std::unique_ptr<RedisReferenceStore>(
      new RedisReferenceStore(std::move(options), *std::move(address), std::move(sealer)));
}

RedisReferenceStore::RedisReferenceStore(RedisStoreOptions options, RedisAddress address,
                                         ValueSealer sealer)
    : options_(std::move(options)),
      address_(std::move(address)),
      sealer_(std::move(sealer)),
      instance_id_(RandomHex(8)),
      channel_(absl::StrCat(options_.key_prefix, "invalidate")) {}

RedisReferenceStore::~RedisReferenceStore() {
  stop_.Notify();
  if (subscriber_.joinable()) subscriber_.join();
}

std::string RedisReferenceStore::address() const {
  return absl::StrCat("redis://", address_.host, ":", address_.port);
}

std::string RedisReferenceStore::RedisKey(const StoreKey& key) const {
  return absl::StrCat(options_.key_prefix, "ref:", key.tenant, "/", key.identity_id);
}

std::string RedisReferenceStore::AssociatedData(const StoreKey& key) {
  // Tenants and identity ids never contain NUL, so the parts cannot run together.
  return absl::StrCat("fsrst.references.v1", std::string(1, '\0'), key.tenant,
                      std::string(1, '\0'), key.identity_id);
}

std::string RedisReferenceStore::FeaturesField(absl::string_view model_version) {
  return absl::StrCat("f:", model_version);
}

std::string RedisReferenceStore::FeaturesAssociatedData(const StoreKey& key,
                                                        absl::string_view model_version,
                                                        absl::string_view generation) {
  // None of the parts contains NUL (model versions are names and numbers).
  const std::string nul(1, '\0');
  return absl::StrCat("fsrst.features.v1", nul, key.tenant, nul, key.identity_id, nul,
                      model_version, nul, generation);
}

std::string RedisReferenceStore::InvalidationMessage(const StoreKey& key) const {
  return absl::StrCat(instance_id_, " ", key.tenant, "/", key.identity_id);
}

absl::Status RedisReferenceStore::Unavailable(absl::string_view what,
                                              absl::string_view cause) const {
  return absl::UnavailableError(absl::StrCat("the reference store ", address(),
                                             " is unreachable (", what, ": ", cause, ")"));
}

void RedisReferenceStore::Observe(StoreOperation operation, absl::StatusCode code,
                                  absl::Time start) const {
  if (options_.observer) options_.observer(operation, code, absl::Now() - start);
}

absl::StatusOr<RedisReferenceStore::Connection> RedisReferenceStore::Connect() const {
  Connection connection(redisConnectWithTimeout(address_.host.c_str(), address_.port,
                                                ToTimeval(options_.connect_timeout_ms)));
  if (connection == nullptr) return Unavailable("connect", "out of memory");
  if (connection->err != 0) return Unavailable("connect", connection->errstr);
  if (redisSetTimeout(connection.get(), ToTimeval(options_.command_timeout_ms)) != REDIS_OK) {
    return Unavailable("set timeout", connection->errstr);
  }
  if (!options_.password.empty()) {
    const char* argv[] = {"AUTH", options_.password.data()};
    const size_t lengths[] = {4, options_.password.size()};
    std::unique_ptr<void, ReplyFree> reply(
        redisCommandArgv(connection.get(), 2, argv, lengths));
    if (reply == nullptr) return Unavailable("AUTH", connection->errstr);
    const auto* r = static_cast<const redisReply*>(reply.get());
    if (r->type == REDIS_REPLY_ERROR) {
      // Redis's own words (WRONGPASS ...), which never contain the password.
      return Unavailable("AUTH refused", std::string(r->str, r->len));
    }
  }
  return connection;
}

absl::StatusOr<RedisReferenceStore::Connection> RedisReferenceStore::Acquire(bool* pooled) {
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      Connection connection = std::move(idle_.back());
      idle_.pop_back();
      *pooled = true;
      return connection;
    }
  }
  *pooled = false;
  return Connect();
}

void RedisReferenceStore::Release(Connection connection) {
  if (connection == nullptr || connection->err != 0) return;
  absl::MutexLock lock(&mu_);
  if (static_cast<int>(idle_.size()) < options_.max_idle_connections) {
    idle_.push_back(std::move(connection));
  }
}

absl::StatusOr<RedisReferenceStore::Replies> RedisReferenceStore::Pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  bool pooled = false;
  absl::StatusOr<Connection> connection = Acquire(&pooled);
  if (!connection.ok()) return connection.status();
  bool closed = false;
  absl::StatusOr<Replies> replies = PipelineOn(*std::move(connection), commands, &closed);
  if (replies.ok() || !pooled || !closed) return replies;
  // The other idle connections date from before the same restart: drop them too.
  std::vector<Connection> stale;
  {
    absl::MutexLock lock(&mu_);
    stale.swap(idle_);
  }
  stale.clear();
  connection = Connect();
  if (!connection.ok()) return connection.status();
  return PipelineOn(*std::move(connection), commands, &closed);
}

absl::StatusOr<RedisReferenceStore::Replies> RedisReferenceStore::PipelineOn(
    Connection connection, const std::vector<std::vector<std::string>>& commands,
    bool* closed) {
  redisContext* context = connection.get();
  *closed = false;
  for (const std::vector<std::string>& command : commands) {
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const std::string& arg : command) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    if (redisAppendCommandArgv(context, static_cast<int>(argv.size()), argv.data(),
                               lengths.data()) != REDIS_OK) {
      return Unavailable("send", context->errstr);
    }
  }
  Replies replies;
  for (size_t i = 0; i < commands.size(); ++i) {
    void* reply = nullptr;
    if (redisGetReply(context, &reply) != REDIS_OK || reply == nullptr) {
      // The connection is closed with `connection`: its state is unknown now.
      const bool timed_out =
          context->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
      // EOF (hiredis says so) or a reset: Redis closed it; nothing was answered.
      *closed = i == 0 && !timed_out &&
                (context->err == REDIS_ERR_EOF ||
                 (context->err == REDIS_ERR_IO && (errno == ECONNRESET || errno == EPIPE)));
      return Unavailable(commands[i][0],
                         timed_out ? absl::StrCat("no reply within ", options_.command_timeout_ms,
                                                  " ms (--reference_store_timeout_ms)")
                                   : std::string(context->errstr));
    }
    replies.Add(static_cast<redisReply*>(reply));
  }
  Release(std::move(connection));
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].type == REDIS_REPLY_ERROR) {
      // A Redis that is loading, read-only or out of memory: not ours to fix.
      return Unavailable(commands[i][0], std::string(replies[i].str, replies[i].len));
    }
  }
  return replies;
}

absl::StatusOr<std::string> RedisReferenceStore::Put(const StoreKey& key,
                                                     absl::string_view value,
                                                     const VersionFeatures* features,
                                                     absl::Duration ttl) {
  const absl::Time start = absl::Now();
  std::string generation = RandomHex(8);
  absl::StatusOr<std::string> sealed = sealer_.Seal(value, AssociatedData(key));
  absl::StatusOr<std::string> sealed_features = std::string();  // none to seal: OK
  if (sealed.ok() && features != nullptr) {
    sealed_features = sealer_.Seal(
        features->bytes, FeaturesAssociatedData(key, features->model_version, generation));
  }
  if (!sealed.ok() || !sealed_features.ok()) {
    const absl::Status status = sealed.ok() ? sealed_features.status() : sealed.status();
    Observe(StoreOperation::kPut, status.code(), start);
    return status;
  }
  const std::string redis_key = RedisKey(key);
  std::vector<std::string> hset = {"HSET", redis_key, "g", generation, "v", *std::move(sealed)};
  if (features != nullptr) {
    hset.push_back(FeaturesField(features->model_version));
    hset.push_back(*std::move(sealed_features));
  }
  // DEL first: the hash holds exactly this Put's fields (no other version's
  // features of the old references survive).
  absl::StatusOr<Replies> replies =
      Pipeline({{"MULTI"},
                {"DEL", redis_key},
                std::move(hset),
                {"PEXPIRE", redis_key, TtlMs(ttl)},
                {"PUBLISH", channel_, InvalidationMessage(key)},
                {"EXEC"}});
  absl::Status status = replies.status();
  if (status.ok() && (*replies)[5].type != REDIS_REPLY_ARRAY) {
    status = Unavailable("EXEC", "the transaction was aborted");
  }
  Observe(StoreOperation::kPut, status.code(), start);
  if (!status.ok()) return status;
  return generation;
}

absl::StatusOr<StoredValue> RedisReferenceStore::Get(const StoreKey& key, absl::Duration ttl) {
  const absl::Time start = absl::Now();
  const std::string redis_key = RedisKey(key);
  absl::StatusOr<Replies> replies =
      Pipeline({{"HMGET", redis_key, "g", "v"}, {"PEXPIRE", redis_key, TtlMs(ttl)}});
  absl::StatusOr<StoredValue> result;
  if (!replies.ok()) {
    result = replies.status();
  } else {
    const redisReply& fields = (*replies)[0];
    if (fields.type != REDIS_REPLY_ARRAY || fields.elements != 2 ||
        fields.element[0]->type != REDIS_REPLY_STRING ||
        fields.element[1]->type != REDIS_REPLY_STRING) {
      result = absl::NotFoundError(
          absl::StrCat("the reference store holds nothing for identity_id \"", key.identity_id,
                       "\""));
    } else {
      absl::StatusOr<std::string> value = sealer_.Open(
          absl::string_view(fields.element[1]->str, fields.element[1]->len),
          AssociatedData(key));
      if (value.ok()) {
        result = StoredValue{*std::move(value),
                             std::string(fields.element[0]->str, fields.element[0]->len)};
      } else {
        result = absl::DataLossError(absl::StrCat(
            "the reference store's value of identity_id \"", key.identity_id,
            "\" cannot be opened with this server's --reference_store_key_file: ",
            value.status().message()));
      }
    }
  }
  Observe(StoreOperation::kGet, result.status().code(), start);
  return result;
}

absl::StatusOr<StoredValue> RedisReferenceStore::GetFeatures(const StoreKey& key,
                                                             absl::string_view model_version,
                                                             absl::Duration ttl) {
  const absl::Time start = absl::Now();
  const std::string redis_key = RedisKey(key);
  absl::StatusOr<Replies> replies =
      Pipeline({{"HMGET", redis_key, "g", FeaturesField(model_version)},
                {"PEXPIRE", redis_key, TtlMs(ttl)}});
  absl::StatusOr<StoredValue> result;
  if (!replies.ok()) {
    result = replies.status();
  } else {
    const redisReply& fields = (*replies)[0];
    if (fields.type != REDIS_REPLY_ARRAY || fields.elements != 2 ||
        fields.element[0]->type != REDIS_REPLY_STRING) {
      result = absl::NotFoundError(
          absl::StrCat("the reference store holds nothing for identity_id \"", key.identity_id,
                       "\""));
    } else {
      StoredValue stored;
      stored.generation.assign(fields.element[0]->str, fields.element[0]->len);
      result = stored;  // no features of this version: an empty value
      if (fields.element[1]->type == REDIS_REPLY_STRING) {
        absl::StatusOr<std::string> features = sealer_.Open(
            absl::string_view(fields.element[1]->str, fields.element[1]->len),
            FeaturesAssociatedData(key, model_version, stored.generation));
        if (features.ok()) {
          result->value = *std::move(features);
        } else {
          result = absl::DataLossError(absl::StrCat(
              "the reference store's ", model_version, " features of identity_id \"",
              key.identity_id, "\" cannot be opened with this server's "
              "--reference_store_key_file for generation ", stored.generation, ": ",
              features.status().message()));
        }
      }
    }
  }
  Observe(StoreOperation::kGetFeatures, result.status().code(), start);
  return result;
}

absl::StatusOr<bool> RedisReferenceStore::PutFeatures(const StoreKey& key,
                                                      absl::string_view generation,
                                                      const VersionFeatures& features,
                                                      absl::Duration ttl) {
  // Atomic on the server: between a client-side check and the write, a
  // registration elsewhere could replace the references.
  static constexpr char kScript[] =
      "if redis.call('HGET', KEYS[1], 'g') ~= ARGV[1] then return 0 end\n"
      "redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])\n"
      "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
      "return 1\n";
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> sealed = sealer_.Seal(
      features.bytes, FeaturesAssociatedData(key, features.model_version, generation));
  absl::StatusOr<bool> result;
  if (!sealed.ok()) {
    result = sealed.status();
  } else {
    absl::StatusOr<Replies> replies =
        Pipeline({{"EVAL", kScript, "1", RedisKey(key), std::string(generation),
                   FeaturesField(features.model_version), *std::move(sealed), TtlMs(ttl)}});
    if (!replies.ok()) {
      result = replies.status();
    } else if ((*replies)[0].type != REDIS_REPLY_INTEGER) {
      result = Unavailable("EVAL", "unexpected reply");
    } else {
      result = (*replies)[0].integer == 1;
    }
  }
  Observe(StoreOperation::kPutFeatures, result.status().code(), start);
  return result;
}

absl::StatusOr<bool> RedisReferenceStore::Delete(const StoreKey& key) {
  const absl::Time start = absl::Now();
  absl::StatusOr<Replies> replies = Pipeline({{"MULTI"},
                                              {"DEL", RedisKey(key)},
                                              {"PUBLISH", channel_, InvalidationMessage(key)},
                                              {"EXEC"}});
  absl::StatusOr<bool> result;
  if (!replies.ok()) {
    result = replies.status();
  } else if ((*replies)[3].type != REDIS_REPLY_ARRAY || (*replies)[3].elements != 2) {
    result = Unavailable("EXEC", "the transaction was aborted");
  } else {
    result = (*replies)[3].element[0]->integer > 0;
  }
  Observe(StoreOperation::kDelete, result.status().code(), start);
  return result;
}

absl::StatusOr<std::vector<std::string>> RedisReferenceStore::Generations(
    absl::Span<const GenerationProbe> probes, absl::Duration ttl) {
  if (probes.empty()) return std::vector<std::string>();
  const absl::Time start = absl::Now();
  std::vector<std::vector<std::string>> commands;
  std::vector<size_t> generation_reply;
  for (const GenerationProbe& probe : probes) {
    const std::string redis_key = RedisKey(probe.key);
    if (probe.touch) commands.push_back({"PEXPIRE", redis_key, TtlMs(ttl)});
    generation_reply.push_back(commands.size());
    commands.push_back({"HGET", redis_key, "g"});
  }
  absl::StatusOr<Replies> replies = Pipeline(commands);
  Observe(StoreOperation::kValidate, replies.status().code(), start);
  if (!replies.ok()) return replies.status();
  std::vector<std::string> generations;
  generations.reserve(probes.size());
  for (size_t i : generation_reply) {
    const redisReply& reply = (*replies)[i];
    generations.push_back(reply.type == REDIS_REPLY_STRING ? std::string(reply.str, reply.len)
                                                           : std::string());
  }
  return generations;
}

void RedisReferenceStore::Subscribe(InvalidationHandlers handlers) {
  subscriber_ = std::thread([this, handlers = std::move(handlers)] { SubscriberLoop(handlers); });
}

void RedisReferenceStore::SubscriberLoop(InvalidationHandlers handlers) {
  // How often a blocked read checks for stop_, and the reconnect backoff.
  constexpr int kPollMs = 100;
  constexpr absl::Duration kMinBackoff = absl::Milliseconds(100);
  constexpr absl::Duration kMaxBackoff = absl::Seconds(1);
  absl::Duration backoff = kMinBackoff;
  bool reported_down = false;
  while (!stop_.HasBeenNotified()) {
    absl::StatusOr<Connection> connection = Connect();
    if (connection.ok()) {
      const char* argv[] = {"SUBSCRIBE", channel_.data()};
      const size_t lengths[] = {9, channel_.size()};
      if (redisAppendCommandArgv(connection->get(), 2, argv, lengths) != REDIS_OK) {
        connection = Unavailable("SUBSCRIBE", (*connection)->errstr);
      }
    }
    if (!connection.ok()) {
      if (!reported_down) {
        std::cerr << "fsrst store: invalidation subscription down, retrying: "
                  << connection.status().message() << std::endl;
        reported_down = true;
      }
      stop_.WaitForNotificationWithTimeout(backoff);
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    redisContext* context = connection->get();
    // Flush the SUBSCRIBE: a zero-length read does the write first.
    int done = 0;
    while (!done && redisBufferWrite(context, &done) == REDIS_OK) {
    }
    bool healthy = done != 0;
    while (healthy && !stop_.HasBeenNotified()) {
      pollfd fd{context->fd, POLLIN, 0};
      const int ready = poll(&fd, 1, kPollMs);
      if (ready < 0 && errno != EINTR) break;
      if (ready <= 0) continue;
      if (redisBufferRead(context) != REDIS_OK) break;
      void* raw = nullptr;
      while (healthy) {
        if (redisGetReplyFromReader(context, &raw) != REDIS_OK) {
          healthy = false;
          break;
        }
        if (raw == nullptr) break;
        std::unique_ptr<void, ReplyFree> reply(raw);
        const auto* r = static_cast<const redisReply*>(raw);
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
            r->element[0]->type != REDIS_REPLY_STRING) {
          continue;
        }
        const absl::string_view kind(r->element[0]->str, r->element[0]->len);
        if (kind == "subscribe") {
          if (reported_down) std::cerr << "fsrst store: invalidation subscription back" << std::endl;
          reported_down = false;
          backoff = kMinBackoff;
          if (handlers.on_resubscribed) handlers.on_resubscribed();
        } else if (kind == "message" && r->element[2]->type == REDIS_REPLY_STRING) {
          const absl::string_view message(r->element[2]->str, r->element[2]->len);
          std::pair<absl::string_view, absl::string_view> sender_key =
              absl::StrSplit(message, absl::MaxSplits(' ', 1));
          if (sender_key.first == instance_id_) continue;
          std::pair<absl::string_view, absl::string_view> tenant_id =
              absl::StrSplit(sender_key.second, absl::MaxSplits('/', 1));
          if (handlers.on_invalidate) {
            handlers.on_invalidate(
                StoreKey{std::string(tenant_id.first), std::string(tenant_id.second)});
          }
        }
      }
    }
    if (!stop_.HasBeenNotified() && !reported_down) {
      std::cerr << "fsrst store: invalidation subscription to " << address()
                << " lost; reconnecting" << std::endl;
      reported_down = true;
    }
  }
}

}  // namespace fsrst
