// The one artificial piece an integration test may put between a controller
// and the real API server: a decorator of kube::HttpTransport that fails
// chosen requests (an HTTP error with a Kubernetes Status body, or no
// response at all) and counts what matched, so a test can make exactly one
// API call of a controller fail, wait until that fault was really hit, and
// check what the controller left behind meanwhile. Every request that no
// fault claims goes to the real transport unchanged.
#pragma once

#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

#include "kube/client.h"
#include "kube/config.h"
#include "kube/http.h"

namespace ferry::testing {

// Which requests a fault concerns: `method`, and a target whose path (the
// query left out) contains `path`, or ends with it when `suffix` (so
// ".../migrations/m" can be told from ".../migrations/m/status").
struct RequestMatch {
  std::string method;
  std::string path;
  bool suffix = false;

  bool matches(const kube::HttpRequest& request) const {
    if (request.method != method) return false;
    const std::string target = request.target.substr(0, request.target.find('?'));
    if (suffix) {
      return target.size() >= path.size() &&
             target.compare(target.size() - path.size(), path.size(), path) == 0;
    }
    return target.find(path) != std::string::npos;
  }
};

struct Fault {
  RequestMatch match;
  int times = INT_MAX;  // how many of the next matching requests fail
  int http_status = 503;
  // Instead of an HTTP answer: no answer at all (the connection broke after
  // the request was sent), which a client may not resend for a write.
  bool transport_error = false;
};

// The faults of one or more transports, shared with the test that sets them.
class FaultPlan {
 public:
  // Arms `fault`; returns its id for heal(), hits() and failures().
  int add(const Fault& fault) {
    std::lock_guard lock(mu_);
    const int id = next_id_++;
    faults_[id] = {fault, fault.times, 0, 0};
    return id;
  }
  // Matching requests pass from now on (and are still counted).
  void heal(int id) {
    std::lock_guard lock(mu_);
    faults_.at(id).remaining = 0;
  }
  // Requests that matched fault `id`, failed or passed.
  int hits(int id) {
    std::lock_guard lock(mu_);
    return faults_.at(id).hits;
  }
  // Requests fault `id` failed.
  int failures(int id) {
    std::lock_guard lock(mu_);
    return faults_.at(id).failures;
  }

  // The injected outcome of `request`, or nullopt to send it for real. The
  // first armed fault that matches decides; every matching fault counts.
  std::optional<Result<kube::HttpResponse>> intercept(const kube::HttpRequest& request) {
    std::lock_guard lock(mu_);
    std::optional<Result<kube::HttpResponse>> outcome;
    for (auto& [id, armed] : faults_) {
      if (!armed.fault.match.matches(request)) continue;
      ++armed.hits;
      if (outcome || armed.remaining <= 0) continue;
      --armed.remaining;
      ++armed.failures;
      outcome = injected(armed.fault, request);
    }
    return outcome;
  }

 private:
  struct Armed {
    Fault fault;
    int remaining = 0;
    int hits = 0;
    int failures = 0;
  };

  static Result<kube::HttpResponse> injected(const Fault& fault, const kube::HttpRequest& request) {
    const std::string what = "injected fault on " + request.method + " " + request.target;
    if (fault.transport_error) {
      return Status(Code::kUnavailable, what + ": connection reset by peer");
    }
    nlohmann::json body = {{"kind", "Status"},
                           {"apiVersion", "v1"},
                           {"metadata", nlohmann::json::object()},
                           {"status", "Failure"},
                           {"message", what},
                           {"reason", fault.http_status == 503 ? "ServiceUnavailable" : ""},
                           {"code", fault.http_status}};
    return kube::HttpResponse{.status = fault.http_status,
                              .headers = {{"content-type", "application/json"}},
                              .body = body.dump()};
  }

  std::mutex mu_;
  int next_id_ = 1;              // guarded by mu_
  std::map<int, Armed> faults_;  // guarded by mu_
};

class FaultInjectingTransport final : public kube::HttpTransport {
 public:
  FaultInjectingTransport(std::unique_ptr<kube::HttpTransport> real,
                          std::shared_ptr<FaultPlan> plan)
      : real_(std::move(real)), plan_(std::move(plan)) {}

  Result<kube::HttpResponse> round_trip(const kube::HttpRequest& request) override {
    if (auto outcome = plan_->intercept(request)) return std::move(*outcome);
    return real_->round_trip(request);
  }

  Result<kube::HttpResponse> stream_lines(const kube::HttpRequest& request,
                                          const std::function<bool(std::string_view)>& on_line,
                                          std::stop_token stop) override {
    if (auto outcome = plan_->intercept(request)) return std::move(*outcome);
    return real_->stream_lines(request, on_line, stop);
  }

 private:
  std::unique_ptr<kube::HttpTransport> real_;
  std::shared_ptr<FaultPlan> plan_;
};

// A client of the API server `config` names whose requests go through
// `plan`'s faults.
inline Result<std::unique_ptr<kube::Client>> faulty_client(const kube::RestConfig& config,
                                                           std::shared_ptr<FaultPlan> plan,
                                                           kube::ClientOptions options = {}) {
  auto real = kube::make_cpprest_transport(config.server, config.tls);
  if (!real.ok()) return real.status();
  auto token =
      std::make_shared<kube::BearerTokenSource>(config.bearer_token, config.bearer_token_file);
  return std::make_unique<kube::Client>(
      std::make_unique<FaultInjectingTransport>(std::move(real).value(), std::move(plan)),
      std::move(token), std::move(options));
}

}  // namespace ferry::testing
