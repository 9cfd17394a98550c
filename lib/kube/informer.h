// An informer in the client-go sense: lists a resource, then watches it from
// the list's resourceVersion (with bookmarks), keeping a thread-safe cache
// that controllers read instead of the API server. It re-lists when the
// server says the resourceVersion is too old (410 Gone), resumes the watch
// after a disconnect or an API server restart with exponential backoff, and
// reports has_synced() once the first list is in the cache. Event handlers
// run on the informer's thread and must only enqueue keys.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <shared_mutex>
#include <stop_token>
#include <string>
#include <vector>

#include "clock/clock.h"
#include "kube/client.h"

namespace ferry::kube {

using ObjectPtr = std::shared_ptr<const json>;
// Index values of an object, e.g. its node name for a "by-node" index.
using IndexFunc = std::function<std::vector<std::string>(const json&)>;

// The informer's cache: objects by "namespace/name" key, plus indexes.
class Store {
 public:
  void add_indexer(const std::string& name, IndexFunc fn);

  ObjectPtr get(const std::string& key) const;
  std::vector<ObjectPtr> list() const;
  std::vector<std::string> keys() const;
  std::vector<ObjectPtr> by_index(const std::string& index, const std::string& value) const;
  size_t size() const;

  // Mutations, used by the informer. Each returns the previous object.
  ObjectPtr upsert(const std::string& key, ObjectPtr object);
  ObjectPtr remove(const std::string& key);

 private:
  void index_locked(const std::string& key, const json& object, bool add);

  mutable std::shared_mutex mu_;
  std::map<std::string, ObjectPtr> items_;     // guarded by mu_
  std::map<std::string, IndexFunc> indexers_;  // guarded by mu_
  // index name -> value -> keys; guarded by mu_
  std::map<std::string, std::map<std::string, std::set<std::string>>> indexes_;
};

struct EventHandlers {
  std::function<void(const ObjectPtr&)> on_add;
  std::function<void(const ObjectPtr& old_object, const ObjectPtr& new_object)> on_update;
  std::function<void(const ObjectPtr& last_known)> on_delete;
};

struct InformerOptions {
  std::string ns;  // empty: all namespaces (or cluster-scoped)
  std::string label_selector;
  std::string field_selector;
  int64_t page_size = 500;
  // Server-side watch timeout; each watch picks a random value in
  // [watch_timeout, 2*watch_timeout) so many clients do not reconnect at once.
  std::chrono::seconds watch_timeout{300};
  std::chrono::milliseconds backoff_base{800};
  std::chrono::milliseconds backoff_cap{std::chrono::seconds(30)};
};

class Informer {
 public:
  Informer(Client& client, ResourceType type, InformerOptions options = {});

  Store& store() { return store_; }
  const Store& store() const { return store_; }
  // Register before run().
  void add_handlers(EventHandlers handlers);

  // Lists and watches until `stop` is requested. Never throws.
  void run(std::stop_token stop);
  bool has_synced() const { return synced_.load(); }
  // Waits (polling) until synced, stop, or the timeout.
  bool wait_for_sync(std::stop_token stop, std::chrono::milliseconds timeout) const;

  // Counters for tests and metrics.
  int64_t lists() const { return lists_.load(); }
  int64_t watches() const { return watches_.load(); }
  const std::string& last_error() const { return last_error_; }

 private:
  Status list_and_replace();
  Status watch_once(std::stop_token stop);
  void apply(const std::string& type, json object);
  void sleep_backoff(std::stop_token stop, int failures);

  Client& client_;
  const ResourceType type_;
  const InformerOptions options_;
  Store store_;
  std::vector<EventHandlers> handlers_;
  std::string resource_version_;  // informer thread only
  std::atomic<bool> synced_{false};
  std::atomic<int64_t> lists_{0};
  std::atomic<int64_t> watches_{0};
  std::string last_error_;  // informer thread only; for diagnostics
};

}  // namespace ferry::kube
