#include "kube/event_recorder.h"

#include <ctime>
#include <random>

namespace ferry::kube {

std::string micro_time_now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  char buf[64];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  snprintf(buf + n, sizeof buf - n, ".%06ldZ", ts.tv_nsec / 1000);
  return buf;
}

EventRecorder::EventRecorder(Client& client, EventRecorderOptions options, Clock& clock)
    : client_(client), options_(std::move(options)), clock_(clock) {}

Status EventRecorder::record(const json& regarding, const std::string& type,
                             const std::string& reason, const std::string& action,
                             const std::string& note) {
  const json& meta = regarding.at("metadata");
  const std::string ns = meta.value("namespace", "default");
  json ref = {{"apiVersion", regarding.value("apiVersion", "")},
              {"kind", regarding.value("kind", "")},
              {"name", meta.value("name", "")},
              {"namespace", meta.value("namespace", "")},
              {"uid", meta.value("uid", "")},
              {"resourceVersion", meta.value("resourceVersion", "")}};
  const std::string key =
      meta.value("uid", "") + "|" + type + "|" + reason + "|" + action + "|" + note;
  const auto now = clock_.now();
  std::unique_lock lock(mu_);
  auto it = seen_.find(key);
  if (it != seen_.end() && now - it->second.last < options_.aggregation_window) {
    Seen& s = it->second;
    s.count += 1;
    s.last = now;
    std::string name = s.name, event_ns = s.ns;
    int count = s.count;
    lock.unlock();
    json patch = {{"series", {{"count", count}, {"lastObservedTime", micro_time_now()}}}};
    auto r = client_.patch(resources::kEvents, event_ns, name, PatchType::kMerge, patch);
    return r.ok() ? Status() : r.status().with_context("update event series");
  }
  // Drop entries that left the window, so the map stays small.
  for (auto s = seen_.begin(); s != seen_.end();) {
    s = now - s->second.last >= options_.aggregation_window ? seen_.erase(s) : std::next(s);
  }
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char suffix[17];
  snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(rng()));
  std::string name = meta.value("name", "object") + "." + suffix;
  seen_[key] = Seen{name, ns, 1, now};
  lock.unlock();
  json event = {{"apiVersion", "events.k8s.io/v1"},
                {"kind", "Event"},
                {"metadata", {{"name", name}, {"namespace", ns}}},
                {"eventTime", micro_time_now()},
                {"reportingController", options_.reporting_controller},
                {"reportingInstance", options_.reporting_instance},
                {"action", action},
                {"reason", reason},
                {"regarding", ref},
                {"note", note.substr(0, 1024)},
                {"type", type}};
  auto r = client_.create(resources::kEvents, ns, event);
  return r.ok() ? Status() : r.status().with_context("create event");
}

}  // namespace ferry::kube
