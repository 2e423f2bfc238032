#ifndef FSRST_TESTS_STORE_REDIS_SERVER_H_
#define FSRST_TESTS_STORE_REDIS_SERVER_H_

// A real redis-server (Debian's /usr/bin/redis-server) on a free port, in a
// temporary directory, without persistence, for tests; plus a raw hiredis
// command for checking what Redis holds. Not thread-safe; one test owns it.

#include <hiredis/hiredis.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fsrst::testing {

inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t length = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  close(fd);
  return ntohs(addr.sin_port);
}

class RedisServer {
 public:
  explicit RedisServer(std::string password = "")
      : port_(FreePort()), password_(std::move(password)) {
    char dir[] = "/tmp/fsrst_redis_XXXXXX";
    dir_ = mkdtemp(dir);
    Start();
  }
  ~RedisServer() {
    Kill();
    std::system(("rm -rf " + dir_).c_str());
  }

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

  // Starts it (again, on the same port) and waits until it answers PING.
  void Start() {
    pid_ = fork();
    if (pid_ == 0) {
      const int null_fd = open("/dev/null", O_WRONLY);
      dup2(null_fd, STDOUT_FILENO);
      dup2(null_fd, STDERR_FILENO);
      std::vector<std::string> args = {"/usr/bin/redis-server", "--port", std::to_string(port_),
                                       "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                       "--dir", dir_, "--loglevel", "warning"};
      if (!password_.empty()) {
        args.push_back("--requirepass");
        args.push_back(password_);
      }
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      if (Command({"PING"}).find("PONG") != std::string::npos ||
          Command({"PING"}).find("NOAUTH") != std::string::npos) {
        return;
      }
      absl::SleepFor(absl::Milliseconds(20));  // polling a process start, not timing a result
    }
    std::abort();
  }

  // SIGKILLs it and waits for it to exit.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // Freezes it (SIGSTOP): connections stay open and nothing is answered.
  void Pause() { kill(pid_, SIGSTOP); }
  void Resume() { kill(pid_, SIGCONT); }

  // A command on a fresh connection: the reply as text (strings and integers
  // as they are, nil as "(nil)", errors as "ERR...", arrays joined by '\n'),
  // or "(down)" when Redis is not reachable.
  std::string Command(const std::vector<std::string>& args) const {
    timeval tv{1, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    if (c == nullptr || c->err != 0) {
      if (c != nullptr) redisFree(c);
      return "(down)";
    }
    std::string out;
    if (!password_.empty()) {
      freeReplyObject(redisCommand(c, "AUTH %b", password_.data(), password_.size()));
    }
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const std::string& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    if (reply == nullptr) {
      out = "(down)";
    } else {
      out = Text(reply);
      freeReplyObject(reply);
    }
    redisFree(c);
    return out;
  }

 private:
  static std::string Text(const redisReply* r) {
    switch (r->type) {
      case REDIS_REPLY_STRING:
      case REDIS_REPLY_STATUS:
      case REDIS_REPLY_ERROR:
        return std::string(r->str, r->len);
      case REDIS_REPLY_INTEGER:
        return std::to_string(r->integer);
      case REDIS_REPLY_NIL:
        return "(nil)";
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (size_t i = 0; i < r->elements; ++i) {
          if (i > 0) out += "\n";
          out += Text(r->element[i]);
        }
        return out;
      }
    }
    return "";
  }

  const int port_;
  const std::string password_;
  std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace fsrst::testing

#endif  // FSRST_TESTS_STORE_REDIS_SERVER_H_
