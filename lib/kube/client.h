// A Kubernetes API client for any resource type, built on the HTTP seam.
// It speaks the API's conventions so controllers need not: list pagination
// (limit/continue), the four patch types, delete preconditions, the status
// subresource, watches as a stream of typed events. Errors are values that
// keep the API's Status: the code tells a caller what to do (Conflict: re-read
// and retry; Gone: re-list; InvalidArgument: report), the reason is the
// API's own word and the message is the server's message verbatim. 429 and
// 5xx answers are retried with exponential backoff that honours Retry-After.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stop_token>
#include <string>

#include "kube/config.h"
#include "kube/http.h"
#include "kube/resource.h"
#include "status/status.h"

namespace ferry::kube {

using json = nlohmann::json;

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  int64_t limit = 0;  // 0: no pagination
  std::string continue_token;
  std::string resource_version;  // "" most recent (quorum read); "0" any cached
};

struct WatchOptions {
  std::string label_selector;
  std::string field_selector;
  std::string resource_version;
  bool allow_bookmarks = true;
  std::chrono::seconds timeout{300};  // server-side timeoutSeconds
};

enum class PatchType { kMerge, kJson, kStrategicMerge, kApply };

struct PatchOptions {
  std::string field_manager;  // required for kApply
  bool force = false;         // kApply: take ownership of conflicting fields
  std::string subresource;    // e.g. "status"
};

struct DeleteOptions {
  std::optional<std::string> precondition_uid;
  std::optional<std::string> precondition_resource_version;
  std::optional<int64_t> grace_period_seconds;
  std::string propagation_policy;  // "", Foreground, Background, Orphan
};

struct WatchEvent {
  std::string type;  // ADDED, MODIFIED, DELETED, BOOKMARK (ERROR becomes a Status)
  json object;
};

// One request as seen by the metrics hook.
struct RequestSample {
  std::string verb;  // get, list, watch, create, update, patch, delete
  int code = 0;      // HTTP status; 0 when no response arrived
  std::chrono::duration<double> latency{};
};

struct ClientOptions {
  std::string user_agent = "ferry";
  int max_retries = 5;
  std::chrono::milliseconds retry_base{std::chrono::milliseconds(100)};
  std::chrono::milliseconds retry_cap{std::chrono::seconds(10)};
  std::chrono::milliseconds request_timeout{std::chrono::seconds(30)};
  std::function<void(const RequestSample&)> on_request;  // metrics; may be empty
  // How the client waits between retries; replaced in unit tests.
  std::function<void(std::chrono::milliseconds)> sleep;
};

class Client {
 public:
  static Result<std::unique_ptr<Client>> create(const RestConfig& config,
                                                ClientOptions options = {});
  Client(std::unique_ptr<HttpTransport> transport, std::shared_ptr<BearerTokenSource> token,
         ClientOptions options);

  Result<json> get(const ResourceType& type, std::string_view ns, std::string_view name);
  // One page; `continue` in the result's metadata when more remain.
  Result<json> list(const ResourceType& type, std::string_view ns, const ListOptions& options);
  // Every page, merged into one list whose metadata.resourceVersion is the
  // first page's (the snapshot the pages belong to).
  Result<json> list_all(const ResourceType& type, std::string_view ns, ListOptions options);
  Result<json> create(const ResourceType& type, std::string_view ns, const json& object);
  // PUT: the object's metadata.resourceVersion makes it a conditional update.
  Result<json> update(const ResourceType& type, std::string_view ns, const json& object);
  Result<json> update_status(const ResourceType& type, std::string_view ns, const json& object);
  Result<json> patch(const ResourceType& type, std::string_view ns, std::string_view name,
                     PatchType patch_type, const json& patch, const PatchOptions& options = {});
  Status remove(const ResourceType& type, std::string_view ns, std::string_view name,
                const DeleteOptions& options = {});

  // Streams events to `on_event` until the server closes the watch (Ok),
  // handing each event over mutable so the consumer may move its object out,
  // `on_event` returns false (Ok), `stop` is requested (Cancelled), or the
  // resourceVersion is too old (Gone).
  Status watch(const ResourceType& type, std::string_view ns, const WatchOptions& options,
               const std::function<bool(WatchEvent&)>& on_event, std::stop_token stop);

  // A raw GET, for non-resource paths such as /readyz or /version.
  Result<HttpResponse> get_raw(const std::string& path);

 private:
  Result<json> call(const std::string& verb, HttpRequest request);
  Result<HttpResponse> send_with_retries(const std::string& verb, HttpRequest request);
  void add_common_headers(HttpRequest& request);

  std::unique_ptr<HttpTransport> transport_;
  std::shared_ptr<BearerTokenSource> token_;
  ClientOptions options_;
};

// Converts a non-2xx API response into a Status (exposed for tests).
Status status_from_response(const HttpResponse& response);

// "namespace/name" or "name": the cache and work-queue key of an object.
std::string object_key(const json& object);

}  // namespace ferry::kube
