#include "kube/informer.h"

#include <mutex>
#include <random>
#include <thread>

namespace ferry::kube {

// ---- Store ----

void Store::add_indexer(const std::string& name, IndexFunc fn) {
  std::unique_lock lock(mu_);
  indexers_[name] = std::move(fn);
  auto& index = indexes_[name];
  index.clear();
  for (const auto& [key, obj] : items_) {
    for (const auto& v : indexers_[name](*obj)) index[v].insert(key);
  }
}

void Store::index_locked(const std::string& key, const json& object, bool add) {
  for (const auto& [name, fn] : indexers_) {
    auto& index = indexes_[name];
    for (const auto& v : fn(object)) {
      if (add) {
        index[v].insert(key);
      } else if (auto it = index.find(v); it != index.end()) {
        it->second.erase(key);
        if (it->second.empty()) index.erase(it);
      }
    }
  }
}

ObjectPtr Store::get(const std::string& key) const {
  std::shared_lock lock(mu_);
  auto it = items_.find(key);
  return it == items_.end() ? nullptr : it->second;
}

std::vector<ObjectPtr> Store::list() const {
  std::shared_lock lock(mu_);
  std::vector<ObjectPtr> out;
  out.reserve(items_.size());
  for (const auto& [key, obj] : items_) out.push_back(obj);
  return out;
}

std::vector<std::string> Store::keys() const {
  std::shared_lock lock(mu_);
  std::vector<std::string> out;
  out.reserve(items_.size());
  for (const auto& [key, obj] : items_) out.push_back(key);
  return out;
}

std::vector<ObjectPtr> Store::by_index(const std::string& index, const std::string& value) const {
  std::shared_lock lock(mu_);
  std::vector<ObjectPtr> out;
  auto idx = indexes_.find(index);
  if (idx == indexes_.end()) return out;
  auto keys = idx->second.find(value);
  if (keys == idx->second.end()) return out;
  for (const auto& key : keys->second) out.push_back(items_.at(key));
  return out;
}

size_t Store::size() const {
  std::shared_lock lock(mu_);
  return items_.size();
}

ObjectPtr Store::upsert(const std::string& key, ObjectPtr object) {
  std::unique_lock lock(mu_);
  ObjectPtr old;
  if (auto it = items_.find(key); it != items_.end()) {
    old = it->second;
    index_locked(key, *old, false);
  }
  index_locked(key, *object, true);
  items_[key] = std::move(object);
  return old;
}

ObjectPtr Store::remove(const std::string& key) {
  std::unique_lock lock(mu_);
  auto it = items_.find(key);
  if (it == items_.end()) return nullptr;
  ObjectPtr old = it->second;
  index_locked(key, *old, false);
  items_.erase(it);
  return old;
}

// ---- Informer ----

namespace {
std::string rv_of(const json& object) {
  return object.value("/metadata/resourceVersion"_json_pointer, std::string());
}
}  // namespace

Informer::Informer(Client& client, ResourceType type, InformerOptions options)
    : client_(client), type_(std::move(type)), options_(std::move(options)) {}

void Informer::add_handlers(EventHandlers handlers) {
  handlers_.push_back(std::move(handlers));
}

bool Informer::wait_for_sync(std::stop_token stop, std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!has_synced()) {
    if (stop.stop_requested() || std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

Status Informer::list_and_replace() {
  auto list = client_.list_all(type_, options_.ns,
                               {.label_selector = options_.label_selector,
                                .field_selector = options_.field_selector,
                                .limit = options_.page_size});
  if (!list.ok()) return list.status();
  ++lists_;
  // Replace the cache with the list, telling handlers what changed.
  std::set<std::string> listed;
  for (auto& item : (*list)["items"]) {
    // List items carry no kind/apiVersion; keep objects uniform with watch events.
    item["kind"] = type_.kind;
    item["apiVersion"] = type_.api_version();
    std::string key = object_key(item);
    listed.insert(key);
    auto obj = std::make_shared<const json>(std::move(item));
    ObjectPtr old = store_.upsert(key, obj);
    for (const auto& h : handlers_) {
      if (!old) {
        if (h.on_add) h.on_add(obj);
      } else if (rv_of(*old) != rv_of(*obj)) {
        if (h.on_update) h.on_update(old, obj);
      }
    }
  }
  for (const auto& key : store_.keys()) {
    if (listed.contains(key)) continue;
    ObjectPtr old = store_.remove(key);  // deleted while we were not watching
    for (const auto& h : handlers_) {
      if (old && h.on_delete) h.on_delete(old);
    }
  }
  resource_version_ = (*list)["metadata"].value("resourceVersion", "");
  synced_ = true;
  return {};
}

void Informer::apply(const std::string& type, json object) {
  std::string rv = rv_of(object);
  if (type == "BOOKMARK") {
    if (!rv.empty()) resource_version_ = rv;
    return;
  }
  std::string key = object_key(object);
  if (type == "DELETED") {
    store_.remove(key);
    // The watch reports the object's final state; report that, not the cache's.
    auto last = std::make_shared<const json>(std::move(object));
    for (const auto& h : handlers_) {
      if (h.on_delete) h.on_delete(last);
    }
  } else {  // ADDED or MODIFIED
    auto obj = std::make_shared<const json>(std::move(object));
    ObjectPtr old = store_.upsert(key, obj);
    for (const auto& h : handlers_) {
      if (!old) {
        if (h.on_add) h.on_add(obj);
      } else if (h.on_update) {
        h.on_update(old, obj);
      }
    }
  }
  if (!rv.empty()) resource_version_ = rv;
}

Status Informer::watch_once(std::stop_token stop) {
  thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<int64_t> spread(0, options_.watch_timeout.count());
  ++watches_;
  return client_.watch(
      type_, options_.ns,
      {.label_selector = options_.label_selector,
       .field_selector = options_.field_selector,
       .resource_version = resource_version_,
       .allow_bookmarks = true,
       .timeout = options_.watch_timeout + std::chrono::seconds(spread(rng))},
      [this](WatchEvent& ev) {
        apply(ev.type, std::move(ev.object));  // no copy per event
        return true;
      },
      stop);
}

void Informer::sleep_backoff(std::stop_token stop, int failures) {
  thread_local std::mt19937 rng{std::random_device{}()};
  auto delay = options_.backoff_base * (int64_t{1} << std::min(failures, 10));
  delay = std::min<std::chrono::milliseconds>(delay, options_.backoff_cap);
  std::uniform_int_distribution<int64_t> jitter(0, delay.count() / 2);
  auto until = std::chrono::steady_clock::now() + delay + std::chrono::milliseconds(jitter(rng));
  while (!stop.stop_requested() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Informer::run(std::stop_token stop) {
  bool need_list = true;
  int failures = 0;
  while (!stop.stop_requested()) {
    if (need_list) {
      Status s = list_and_replace();
      if (!s.ok()) {
        last_error_ = "list: " + s.to_string();
        sleep_backoff(stop, failures++);
        continue;
      }
      need_list = false;
      failures = 0;
    }
    Status s = watch_once(stop);
    if (stop.stop_requested()) break;
    if (s.ok()) {
      failures = 0;  // the server ended the watch at its timeout: resume at once
      continue;
    }
    last_error_ = "watch: " + s.to_string();
    if (s.code() == Code::kGone) {
      need_list = true;  // our resourceVersion was compacted away: re-list
      continue;
    }
    sleep_backoff(stop, failures++);  // disconnect or API server down: resume
  }
}

}  // namespace ferry::kube
