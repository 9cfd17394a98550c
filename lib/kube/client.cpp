#include "kube/client.h"

#include <algorithm>
#include <random>
#include <thread>

namespace ferry::kube {
namespace {

bool retriable_code(int code) {
  return code == 429 || code == 502 || code == 503 || code == 504;
}

std::chrono::milliseconds retry_after(const HttpResponse& response) {
  auto it = response.headers.find("retry-after");
  if (it == response.headers.end()) return std::chrono::milliseconds(0);
  try {
    return std::chrono::seconds(std::stoll(it->second));
  } catch (...) {
    return std::chrono::milliseconds(0);  // an HTTP date: fall back to backoff
  }
}

Code code_for(int http, const std::string& reason) {
  switch (http) {
    case 400:
      return Code::kInvalidArgument;
    case 401:
    case 403:
      return Code::kPermissionDenied;
    case 404:
      return Code::kNotFound;
    case 409:
      return reason == "AlreadyExists" ? Code::kAlreadyExists : Code::kConflict;
    case 410:
      return Code::kGone;
    case 422:
      return Code::kInvalidArgument;
    case 429:
      return Code::kResourceExhausted;
    case 504:
      return Code::kDeadlineExceeded;
    default:
      return http >= 500 ? Code::kUnavailable : Code::kInternal;
  }
}

std::string with_query(std::string path, const std::vector<std::string>& params) {
  char sep = '?';
  for (const auto& p : params) {
    if (p.empty()) continue;
    path += sep;
    path += p;
    sep = '&';
  }
  return path;
}

std::string param(const char* name, const std::string& value) {
  return value.empty() ? std::string() : std::string(name) + "=" + query_escape(value);
}

}  // namespace

Status status_from_response(const HttpResponse& response) {
  std::string reason, message;
  auto body = json::parse(response.body, nullptr, false);
  if (!body.is_discarded() && body.is_object() && body.value("kind", "") == "Status") {
    reason = body.value("reason", "");
    message = body.value("message", "");
  }
  if (message.empty()) {
    message = "HTTP " + std::to_string(response.status) +
              (response.body.empty() ? "" : ": " + response.body.substr(0, 512));
  }
  return Status(code_for(response.status, reason), message, reason);
}

std::string object_key(const json& object) {
  const auto& meta = object.at("metadata");
  std::string ns = meta.value("namespace", "");
  std::string name = meta.value("name", "");
  return ns.empty() ? name : ns + "/" + name;
}

Result<std::unique_ptr<Client>> Client::create(const RestConfig& config, ClientOptions options) {
  auto transport = make_cpprest_transport(config.server, config.tls);
  if (!transport.ok()) return transport.status();
  auto token = std::make_shared<BearerTokenSource>(config.bearer_token, config.bearer_token_file);
  return std::make_unique<Client>(std::move(transport).value(), std::move(token),
                                  std::move(options));
}

Client::Client(std::unique_ptr<HttpTransport> transport, std::shared_ptr<BearerTokenSource> token,
               ClientOptions options)
    : transport_(std::move(transport)), token_(std::move(token)), options_(std::move(options)) {
  if (!options_.sleep) {
    options_.sleep = [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
  }
}

void Client::add_common_headers(HttpRequest& request) {
  request.headers.emplace_back("Accept", "application/json");
  request.headers.emplace_back("User-Agent", options_.user_agent);
  if (token_) {
    if (std::string auth = token_->header(); !auth.empty()) {
      request.headers.emplace_back("Authorization", auth);
    }
  }
}

Result<HttpResponse> Client::send_with_retries(const std::string& verb, HttpRequest request) {
  add_common_headers(request);
  if (request.timeout.count() == 0) request.timeout = options_.request_timeout;
  thread_local std::mt19937 rng{std::random_device{}()};
  const bool idempotent = request.method == "GET";
  for (int attempt = 0;; ++attempt) {
    auto start = std::chrono::steady_clock::now();
    auto response = transport_->round_trip(request);
    if (options_.on_request) {
      options_.on_request(
          {verb, response.ok() ? response->status : 0, std::chrono::steady_clock::now() - start});
    }
    bool retry = false;
    std::chrono::milliseconds wait{0};
    if (!response.ok()) {
      // No answer: a read is safe to repeat; a write only when it provably
      // never reached the server.
      retry = response.status().code() == Code::kUnavailable &&
              (idempotent || response.status().reason() == kRequestNotSent);
    } else if (retriable_code(response->status)) {
      retry = true;
      wait = retry_after(*response);
    }
    if (!retry || attempt >= options_.max_retries) return response;
    std::chrono::milliseconds backoff = options_.retry_base * (int64_t{1} << std::min(attempt, 16));
    backoff = std::min(backoff, options_.retry_cap);
    std::uniform_int_distribution<int64_t> jitter(0, backoff.count() / 2);
    std::chrono::milliseconds delay = backoff + std::chrono::milliseconds(jitter(rng));
    options_.sleep(std::max(wait, delay));
  }
}

Result<json> Client::call(const std::string& verb, HttpRequest request) {
  auto response = send_with_retries(verb, std::move(request));
  if (!response.ok()) return response.status();
  if (response->status < 200 || response->status > 299) return status_from_response(*response);
  auto body = json::parse(response->body, nullptr, false);
  if (body.is_discarded()) {
    return internal_error("API answered HTTP " + std::to_string(response->status) +
                          " with a body that is not JSON");
  }
  return body;
}

Result<json> Client::get(const ResourceType& type, std::string_view ns, std::string_view name) {
  return call("get", {.method = "GET", .target = type.path(ns, name)});
}

Result<json> Client::list(const ResourceType& type, std::string_view ns,
                          const ListOptions& options) {
  std::string target =
      with_query(type.path(ns), {param("labelSelector", options.label_selector),
                                 param("fieldSelector", options.field_selector),
                                 options.limit > 0 ? "limit=" + std::to_string(options.limit) : "",
                                 param("continue", options.continue_token),
                                 param("resourceVersion", options.resource_version)});
  return call("list", {.method = "GET", .target = target});
}

Result<json> Client::list_all(const ResourceType& type, std::string_view ns, ListOptions options) {
  json merged;
  for (;;) {
    auto page = list(type, ns, options);
    if (!page.ok()) return page.status();
    if (merged.is_null()) {
      merged = *page;
      merged["items"] = json::array();
    }
    for (auto& item : (*page)["items"]) merged["items"].push_back(std::move(item));
    std::string next = page->value("/metadata/continue"_json_pointer, std::string());
    if (next.empty()) break;
    options.continue_token = next;
    options.resource_version.clear();  // a continue token fixes the snapshot
  }
  merged["metadata"].erase("continue");
  return merged;
}

Result<json> Client::create(const ResourceType& type, std::string_view ns, const json& object) {
  return call("create", {.method = "POST", .target = type.path(ns), .body = object.dump()});
}

Result<json> Client::update(const ResourceType& type, std::string_view ns, const json& object) {
  std::string name = object.at("metadata").value("name", "");
  if (name.empty()) return invalid_argument("update: object has no metadata.name");
  return call("update", {.method = "PUT", .target = type.path(ns, name), .body = object.dump()});
}

Result<json> Client::update_status(const ResourceType& type, std::string_view ns,
                                   const json& object) {
  std::string name = object.at("metadata").value("name", "");
  if (name.empty()) return invalid_argument("update_status: object has no metadata.name");
  return call("update",
              {.method = "PUT", .target = type.path(ns, name, "status"), .body = object.dump()});
}

Result<json> Client::patch(const ResourceType& type, std::string_view ns, std::string_view name,
                           PatchType patch_type, const json& patch_body,
                           const PatchOptions& options) {
  const char* content_type = "application/merge-patch+json";
  std::vector<std::string> params;
  switch (patch_type) {
    case PatchType::kMerge:
      break;
    case PatchType::kJson:
      content_type = "application/json-patch+json";
      break;
    case PatchType::kStrategicMerge:
      content_type = "application/strategic-merge-patch+json";
      break;
    case PatchType::kApply:
      content_type = "application/apply-patch+yaml";  // JSON is valid YAML
      if (options.field_manager.empty()) {
        return invalid_argument("server-side apply needs a field manager");
      }
      if (options.force) params.emplace_back("force=true");
      break;
  }
  params.push_back(param("fieldManager", options.field_manager));
  HttpRequest request{.method = "PATCH",
                      .target = with_query(type.path(ns, name, options.subresource), params),
                      .headers = {{"Content-Type", content_type}},
                      .body = patch_body.dump()};
  return call("patch", std::move(request));
}

Status Client::remove(const ResourceType& type, std::string_view ns, std::string_view name,
                      const DeleteOptions& options) {
  json body = {{"kind", "DeleteOptions"}, {"apiVersion", "v1"}};
  if (options.precondition_uid) body["preconditions"]["uid"] = *options.precondition_uid;
  if (options.precondition_resource_version) {
    body["preconditions"]["resourceVersion"] = *options.precondition_resource_version;
  }
  if (options.grace_period_seconds) body["gracePeriodSeconds"] = *options.grace_period_seconds;
  if (!options.propagation_policy.empty()) {
    body["propagationPolicy"] = options.propagation_policy;
  }
  auto r = call("delete", {.method = "DELETE", .target = type.path(ns, name), .body = body.dump()});
  return r.ok() ? Status() : r.status();
}

Status Client::watch(const ResourceType& type, std::string_view ns, const WatchOptions& options,
                     const std::function<bool(WatchEvent&)>& on_event, std::stop_token stop) {
  std::string target =
      with_query(type.path(ns), {"watch=1", param("labelSelector", options.label_selector),
                                 param("fieldSelector", options.field_selector),
                                 param("resourceVersion", options.resource_version),
                                 options.allow_bookmarks ? "allowWatchBookmarks=true" : "",
                                 "timeoutSeconds=" + std::to_string(options.timeout.count())});
  HttpRequest request{.method = "GET",
                      .target = target,
                      // The connection idles between events; give it the
                      // server-side timeout plus slack before calling it dead.
                      .timeout = options.timeout + std::chrono::seconds(30)};
  add_common_headers(request);
  Status stream_error;
  auto start = std::chrono::steady_clock::now();
  auto response = transport_->stream_lines(
      request,
      [&](std::string_view line) {
        auto event = json::parse(line, nullptr, false);
        if (event.is_discarded() || !event.is_object()) {
          stream_error = internal_error("watch: undecodable event");
          return false;
        }
        WatchEvent ev{event.value("type", ""), std::move(event["object"])};
        if (ev.type == "ERROR") {
          int code = ev.object.value("code", 500);
          stream_error =
              Status(code_for(code, ev.object.value("reason", "")),
                     ev.object.value("message", "watch error"), ev.object.value("reason", ""));
          return false;
        }
        return on_event(ev);
      },
      stop);
  if (options_.on_request) {
    options_.on_request(
        {"watch", response.ok() ? response->status : 0, std::chrono::steady_clock::now() - start});
  }
  if (!response.ok()) return response.status();
  if (response->status < 200 || response->status > 299) return status_from_response(*response);
  if (stop.stop_requested()) return Status(Code::kCancelled, "watch stopped");
  return stream_error;
}

Result<HttpResponse> Client::get_raw(const std::string& path) {
  return send_with_retries("get", {.method = "GET", .target = path});
}

}  // namespace ferry::kube
