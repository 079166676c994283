// http_load: a keep-alive HTTP/1.1 load generator for the daemon's API (docs/benchmarks.md,
// "HTTP API"). One thread drives N connections with poll(); each connection sends one request,
// waits for its answer, and sends the next, for a fixed time. Prints requests per second, the
// status counts and latency percentiles.
//
//   http_load --port 8080 --connections 50 --seconds 10 --path /health
//   http_load --port 8080 --connections 50 --seconds 10 --post /api/v1/tasks --token T
//
// With --post, each request creates a task {"type":"noop","schedule":{"kind":"once","at":...}}
// due in a day, so the scheduler does not run them during the measurement.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using steady = std::chrono::steady_clock;

struct options {
  int port = 8080;
  int connections = 50;
  double seconds = 10;
  std::string path = "/health";
  bool post = false;
  std::string token;
};

struct client {
  int fd = -1;
  std::string in;
  std::string out;
  std::size_t sent = 0;
  steady::time_point started;
};

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 &&
      errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string tomorrow() {
  const std::time_t t = std::time(nullptr) + 86400;
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string request_for(const options& o, std::uint64_t n) {
  if (!o.post) return "GET " + o.path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  static const std::string at = tomorrow();
  const std::string body = R"({"type":"noop","name":"load-)" + std::to_string(n) +
                           R"(","schedule":{"kind":"once","at":")" + at + R"("}})";
  return "POST " + o.path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + o.token +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

// The length of the first complete response in `in` and its status; 0 when incomplete.
std::size_t complete_response(const std::string& in, int& status) {
  const auto end = in.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  status = std::atoi(in.c_str() + 9);
  std::size_t length = 0;
  for (std::size_t at = in.find("\r\n"); at < end; at = in.find("\r\n", at + 2)) {
    if (strncasecmp(in.c_str() + at + 2, "content-length:", 15) == 0) {
      length = std::strtoul(in.c_str() + at + 17, nullptr, 10);
    }
  }
  return in.size() >= end + 4 + length ? end + 4 + length : 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const std::string v = argv[i + 1];
    if (k == "--port") {
      o.port = std::atoi(v.c_str());
    } else if (k == "--connections") {
      o.connections = std::max(1, std::atoi(v.c_str()));
    } else if (k == "--seconds") {
      o.seconds = std::atof(v.c_str());
    } else if (k == "--path") {
      o.path = v;
    } else if (k == "--post") {
      o.path = v;
      o.post = true;
    } else if (k == "--token") {
      o.token = v;
    } else {
      std::fprintf(stderr, "http_load: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  std::vector<client> clients(static_cast<std::size_t>(o.connections));
  std::uint64_t sequence = static_cast<std::uint64_t>(std::time(nullptr)) * 100000;
  for (auto& c : clients) {
    c.fd = connect_to(o.port);
    if (c.fd < 0) {
      std::perror("http_load: connect");
      return 1;
    }
    c.out = request_for(o, sequence++);
    c.started = steady::now();
  }
  std::map<int, std::uint64_t> statuses;
  std::vector<double> latencies_ms;
  std::uint64_t failures = 0;
  const auto begin = steady::now();
  const auto until = begin + std::chrono::duration_cast<steady::duration>(
                                 std::chrono::duration<double>(o.seconds));
  std::vector<pollfd> fds(clients.size());
  char buf[65536];
  while (steady::now() < until) {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      fds[i] = {
          clients[i].fd,
          static_cast<short>(clients[i].sent < clients[i].out.size() ? POLLOUT | POLLIN : POLLIN),
          0};
    }
    if (::poll(fds.data(), fds.size(), 100) < 0 && errno != EINTR) break;
    for (std::size_t i = 0; i < clients.size(); ++i) {
      client& c = clients[i];
      if ((fds[i].revents & POLLOUT) != 0 && c.sent < c.out.size()) {
        const auto n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) c.sent += static_cast<std::size_t>(n);
      }
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const auto n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n <= 0) {
        ++failures;  // the server closed a keep-alive connection: reconnect
        ::close(c.fd);
        c = client{};
        c.fd = connect_to(o.port);
        if (c.fd < 0) return 1;
        c.out = request_for(o, sequence++);
        c.started = steady::now();
        continue;
      }
      c.in.append(buf, static_cast<std::size_t>(n));
      int status = 0;
      if (const auto used = complete_response(c.in, status)) {
        c.in.erase(0, used);
        ++statuses[status];
        latencies_ms.push_back(
            std::chrono::duration<double, std::milli>(steady::now() - c.started).count());
        c.out = request_for(o, sequence++);
        c.sent = 0;
        c.started = steady::now();
      }
    }
  }
  const double elapsed = std::chrono::duration<double>(steady::now() - begin).count();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const auto pct = [&](double p) {
    if (latencies_ms.empty()) return 0.0;
    return latencies_ms[std::min(
        latencies_ms.size() - 1,
        static_cast<std::size_t>(p * static_cast<double>(latencies_ms.size())))];
  };
  std::printf("%s %s, %d keep-alive connections, %.1f s: %zu responses, %.0f/s\n",
              o.post ? "POST" : "GET", o.path.c_str(), o.connections, elapsed, latencies_ms.size(),
              static_cast<double>(latencies_ms.size()) / elapsed);
  std::printf("latency ms: p50 %.2f, p90 %.2f, p99 %.2f, max %.2f; reconnects %llu; statuses:",
              pct(0.50), pct(0.90), pct(0.99), latencies_ms.empty() ? 0.0 : latencies_ms.back(),
              static_cast<unsigned long long>(failures));
  for (const auto& [status, count] : statuses)
    std::printf(" %d x %llu", status, static_cast<unsigned long long>(count));
  std::printf("\n");
  return 0;
}
