#include "kube/config.h"

#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>

#include "encoding/base64.h"
#include "posix/read_file.h"

namespace ferry::kube {
namespace fs = std::filesystem;
namespace {

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// A named entry (cluster, user, context) of a kubeconfig list.
YAML::Node find_named(const YAML::Node& list, const std::string& name, const char* field) {
  if (!list || !list.IsSequence()) return {};
  for (const auto& item : list) {
    if (item["name"] && item["name"].as<std::string>() == name) return item[field];
  }
  return {};
}

std::string str(const YAML::Node& node, const char* key) {
  return node && node[key] ? node[key].as<std::string>() : std::string();
}

// PEM from `<key>-data` (base64) or from the file `<key>` (relative to `dir`).
Result<std::string> pem_from(const YAML::Node& node, const std::string& key, const fs::path& dir) {
  std::string data = str(node, (key + "-data").c_str());
  if (!data.empty()) {
    auto decoded = encoding::base64_decode(data);
    if (!decoded.ok()) return invalid_argument(key + "-data: " + decoded.status().message());
    return decoded;
  }
  std::string file = str(node, key.c_str());
  if (file.empty()) return std::string();
  fs::path p(file);
  if (p.is_relative()) p = dir / p;
  return posix::read_file(p.string());
}

}  // namespace

Result<RestConfig> load_kubeconfig(const std::string& path, const std::string& context_name) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return not_found("kubeconfig " + path + " cannot be read");
  } catch (const YAML::Exception& e) {
    return invalid_argument("kubeconfig " + path + " is not valid YAML: " + e.what());
  }
  const fs::path dir = fs::path(path).parent_path();
  try {
    std::string ctx_name = context_name.empty() ? str(root, "current-context") : context_name;
    if (ctx_name.empty()) return invalid_argument("kubeconfig " + path + " has no current-context");
    YAML::Node ctx = find_named(root["contexts"], ctx_name, "context");
    if (!ctx || ctx.IsNull()) {
      return invalid_argument("kubeconfig " + path + ": context " + ctx_name + " not found");
    }
    std::string cluster_name = str(ctx, "cluster");
    YAML::Node cluster = find_named(root["clusters"], cluster_name, "cluster");
    if (!cluster || cluster.IsNull()) {
      return invalid_argument("kubeconfig " + path + ": cluster " + cluster_name + " not found");
    }
    RestConfig cfg;
    cfg.server = str(cluster, "server");
    if (cfg.server.empty()) {
      return invalid_argument("kubeconfig " + path + ": cluster " + cluster_name +
                              " has no server");
    }
    if (std::string ns = str(ctx, "namespace"); !ns.empty()) cfg.default_namespace = ns;
    cfg.tls.insecure_skip_verify = str(cluster, "insecure-skip-tls-verify") == "true";
    auto ca = pem_from(cluster, "certificate-authority", dir);
    if (!ca.ok()) return ca.status().with_context("kubeconfig " + path);
    cfg.tls.ca_pem = *ca;

    std::string user_name = str(ctx, "user");
    YAML::Node user = find_named(root["users"], user_name, "user");
    if (user && !user.IsNull()) {
      auto cert = pem_from(user, "client-certificate", dir);
      if (!cert.ok()) return cert.status().with_context("kubeconfig " + path);
      auto key = pem_from(user, "client-key", dir);
      if (!key.ok()) return key.status().with_context("kubeconfig " + path);
      if (cert->empty() != key->empty()) {
        return invalid_argument("kubeconfig " + path + ": user " + user_name +
                                " needs both a client certificate and a client key");
      }
      cfg.tls.client_cert_pem = *cert;
      cfg.tls.client_key_pem = *key;
      cfg.bearer_token = str(user, "token");
      std::string token_file = str(user, "tokenFile");
      if (!token_file.empty() && fs::path(token_file).is_relative()) {
        token_file = (dir / token_file).string();
      }
      cfg.bearer_token_file = token_file;
    }
    return cfg;
  } catch (const YAML::Exception& e) {
    return invalid_argument("kubeconfig " + path + " has an unexpected shape: " + e.what());
  }
}

Result<RestConfig> in_cluster_config(const std::string& root) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || port == nullptr) {
    return not_found("not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset)");
  }
  const std::string sa = root + "/var/run/secrets/kubernetes.io/serviceaccount";
  RestConfig cfg;
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";  // IPv6
  cfg.server = "https://" + h + ":" + port;
  auto ca = posix::read_file(sa + "/ca.crt");
  if (!ca.ok()) return ca.status().with_context("in-cluster config");
  cfg.tls.ca_pem = *ca;
  cfg.bearer_token_file = sa + "/token";
  if (auto ns = posix::read_file(sa + "/namespace"); ns.ok()) cfg.default_namespace = trim(*ns);
  return cfg;
}

Result<RestConfig> load_config(const std::string& kubeconfig_path) {
  if (!kubeconfig_path.empty()) return load_kubeconfig(kubeconfig_path);
  if (const char* env = std::getenv("KUBECONFIG"); env != nullptr && *env != '\0') {
    std::string first = env;
    first = first.substr(0, first.find(':'));
    return load_kubeconfig(first);
  }
  auto in_cluster = in_cluster_config();
  if (in_cluster.ok()) return in_cluster;
  if (const char* home = std::getenv("HOME"); home != nullptr) {
    std::string p = std::string(home) + "/.kube/config";
    if (fs::exists(p)) return load_kubeconfig(p);
  }
  return not_found("no Kubernetes config: pass --kubeconfig, set KUBECONFIG, or run in a cluster");
}

BearerTokenSource::BearerTokenSource(std::string token, std::string token_file,
                                     std::chrono::seconds recheck)
    : token_(std::move(token)), file_(std::move(token_file)), recheck_(recheck) {}

std::string BearerTokenSource::header() {
  std::lock_guard lock(mu_);
  if (!file_.empty()) {
    auto now = std::chrono::steady_clock::now();
    if (now >= next_check_) {
      next_check_ = now + recheck_;
      struct stat st {};
      if (::stat(file_.c_str(), &st) == 0) {
        int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
        if (mtime != file_mtime_ns_) {
          // Keep the last good token if the file is briefly unreadable
          // during an atomic rotation.
          if (auto t = posix::read_file(file_); t.ok() && !trim(*t).empty()) {
            token_ = trim(*t);
            file_mtime_ns_ = mtime;
          }
        }
      }
    }
  }
  return token_.empty() ? std::string() : "Bearer " + token_;
}

}  // namespace ferry::kube
