#include "control_plane.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "encoding/base64.h"
#include "pki/pki.h"

namespace ferry::testing {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

Status write_file(const std::string& path, const std::string& data, fs::perms perms) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  if (!out) return internal_error("write " + path);
  std::error_code ec;
  fs::permissions(path, perms, ec);
  if (ec) return internal_error("chmod " + path + ": " + ec.message());
  return {};
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string tail_of(const std::string& path, size_t bytes = 2000) {
  std::string all = read_file(path);
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

}  // namespace

std::string ControlPlane::bin(const std::string& name) const {
  std::string dir = options_.bin_dir;
  if (dir.empty()) {
    const char* env = std::getenv("FERRY_TOOL_BIN");
    if (env != nullptr) dir = env;
  }
  return dir.empty() ? name : dir + "/" + name;
}

Result<std::unique_ptr<ControlPlane>> ControlPlane::start(ControlPlaneOptions options) {
  std::unique_ptr<ControlPlane> cp(new ControlPlane());
  cp->options_ = std::move(options);
  if (cp->options_.work_dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "ferry-controlplane-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return internal_error("mkdtemp");
    cp->dir_ = tmpl;
    cp->owns_dir_ = true;
  } else {
    cp->dir_ = cp->options_.work_dir;
    fs::create_directories(cp->dir_);
  }
  auto started = std::chrono::steady_clock::now();
  FERRY_RETURN_IF_ERROR(cp->write_pki());
  FERRY_RETURN_IF_ERROR(cp->start_etcd());
  FERRY_RETURN_IF_ERROR(cp->start_apiserver());
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  std::fprintf(stderr, "control plane ready at %s in %lld ms (%s)\n", cp->server_.c_str(),
               static_cast<long long>(took.count()), cp->dir_.c_str());
  return cp;
}

ControlPlane::~ControlPlane() {
  if (apiserver_) apiserver_->stop(10s);
  if (etcd_) etcd_->stop(10s);
  if (owns_dir_ && std::getenv("FERRY_KEEP_CONTROLPLANE") == nullptr) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

Status ControlPlane::write_pki() {
  auto port = free_port();
  if (!port.ok()) return port.status();
  apiserver_port_ = *port;
  server_ = "https://127.0.0.1:" + std::to_string(apiserver_port_);

  std::string pki = dir_ + "/pki";
  fs::create_directories(pki);
  auto ca = pki::make_ca("ferry-test-ca", 24h);
  if (!ca.ok()) return ca.status();
  auto serving = pki::sign(*ca, {.common_name = "kube-apiserver",
                                 .dns_names = {"localhost", "kubernetes", "kubernetes.default",
                                               "kubernetes.default.svc"},
                                 .ip_addresses = {"127.0.0.1", "10.0.0.1"},
                                 .usage = pki::Usage::kServer,
                                 .validity = 24h});
  if (!serving.ok()) return serving.status();
  auto admin = pki::sign(*ca, {.common_name = "ferry-test-admin",
                               .organizations = {"system:masters"},
                               .usage = pki::Usage::kClient,
                               .validity = 24h});
  if (!admin.ok()) return admin.status();
  auto sa = pki::generate_key();
  if (!sa.ok()) return sa.status();

  const auto priv = fs::perms::owner_read | fs::perms::owner_write;
  const auto pub = priv | fs::perms::group_read | fs::perms::others_read;
  FERRY_RETURN_IF_ERROR(write_file(pki + "/ca.crt", ca->cert_pem, pub));
  FERRY_RETURN_IF_ERROR(write_file(pki + "/apiserver.crt", serving->cert_pem, pub));
  FERRY_RETURN_IF_ERROR(write_file(pki + "/apiserver.key", serving->key_pem, priv));
  FERRY_RETURN_IF_ERROR(write_file(pki + "/admin.crt", admin->cert_pem, pub));
  FERRY_RETURN_IF_ERROR(write_file(pki + "/admin.key", admin->key_pem, priv));
  FERRY_RETURN_IF_ERROR(write_file(pki + "/sa.key", sa->private_key_pem, priv));
  FERRY_RETURN_IF_ERROR(write_file(pki + "/sa.pub", sa->public_key_pem, pub));

  using encoding::base64_encode;
  kubeconfig_path_ = dir_ + "/kubeconfig";
  std::string kubeconfig =
      "apiVersion: v1\nkind: Config\nclusters:\n- name: ferry-test\n  cluster:\n    server: " +
      server_ + "\n    certificate-authority-data: " + base64_encode(ca->cert_pem) +
      "\nusers:\n- name: ferry-test-admin\n  user:\n    client-certificate-data: " +
      base64_encode(admin->cert_pem) + "\n    client-key-data: " + base64_encode(admin->key_pem) +
      "\ncontexts:\n- name: ferry-test\n  context:\n    cluster: ferry-test\n    user: "
      "ferry-test-admin\ncurrent-context: ferry-test\n";
  return write_file(kubeconfig_path_, kubeconfig, priv);
}

Status ControlPlane::start_etcd() {
  auto client = free_port();
  auto peer = free_port();
  if (!client.ok() || !peer.ok()) return internal_error("no free port for etcd");
  etcd_endpoint_ = "http://127.0.0.1:" + std::to_string(*client);
  etcd_peer_port_ = *peer;
  std::string peer_url = "http://127.0.0.1:" + std::to_string(*peer);
  auto p = process::Subprocess::spawn({
      .argv = {bin("etcd"), "--name=ferry-test", "--data-dir=" + dir_ + "/etcd",
               "--listen-client-urls=" + etcd_endpoint_,
               "--advertise-client-urls=" + etcd_endpoint_, "--listen-peer-urls=" + peer_url,
               "--initial-advertise-peer-urls=" + peer_url,
               "--initial-cluster=ferry-test=" + peer_url,
               // Test data is disposable: skip fsync, it dominates on slow disks.
               "--unsafe-no-fsync", "--log-level=warn"},
      .output_file = dir_ + "/etcd.log",
  });
  if (!p.ok()) return p.status().with_context("start etcd");
  etcd_.emplace(std::move(p).value());
  auto deadline = std::chrono::steady_clock::now() + options_.ready_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!etcd_->running()) {
      return internal_error("etcd exited: " + tail_of(dir_ + "/etcd.log"));
    }
    auto r =
        process::run({bin("etcdctl"), "--endpoints=" + etcd_endpoint_, "endpoint", "health"}, 5s);
    if (r.ok() && r->exit_code == 0) return {};
    std::this_thread::sleep_for(50ms);
  }
  return Status(Code::kDeadlineExceeded, "etcd not healthy: " + tail_of(dir_ + "/etcd.log"));
}

Status ControlPlane::start_apiserver() {
  if (apiserver_ && apiserver_->running()) return failed_precondition("apiserver is running");
  std::string pki = dir_ + "/pki";
  auto p = process::Subprocess::spawn({
      .argv = {bin("kube-apiserver"), "--etcd-servers=" + etcd_endpoint_,
               "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
               "--secure-port=" + std::to_string(apiserver_port_),
               "--tls-cert-file=" + pki + "/apiserver.crt",
               "--tls-private-key-file=" + pki + "/apiserver.key",
               "--client-ca-file=" + pki + "/ca.crt",
               "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
               "--service-account-key-file=" + pki + "/sa.pub",
               "--service-account-signing-key-file=" + pki + "/sa.key",
               "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=RBAC",
               "--allow-privileged=true",
               // No controller-manager runs here to create default service accounts.
               "--disable-admission-plugins=ServiceAccount",
               std::string("--watch-cache=") + (options_.watch_cache ? "true" : "false"),
               "--cert-dir=" + pki, "--v=1"},
      .output_file = dir_ + "/apiserver.log",
  });
  if (!p.ok()) return p.status().with_context("start kube-apiserver");
  apiserver_.emplace(std::move(p).value());
  return wait_ready(options_.ready_timeout);
}

Status ControlPlane::wait_ready(std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!apiserver_->running()) {
      return internal_error("kube-apiserver exited: " + tail_of(dir_ + "/apiserver.log"));
    }
    auto r = kubectl({"get", "--raw", "/readyz"});
    if (r.ok() && r->exit_code == 0 && r->out == "ok") return {};
    std::this_thread::sleep_for(100ms);
  }
  return Status(Code::kDeadlineExceeded,
                "kube-apiserver not ready: " + tail_of(dir_ + "/apiserver.log"));
}

Status ControlPlane::stop_apiserver() {
  if (!apiserver_) return failed_precondition("apiserver not started");
  apiserver_->stop(20s);
  apiserver_.reset();
  return {};
}

Status ControlPlane::restart_apiserver() {
  FERRY_RETURN_IF_ERROR(stop_apiserver());
  // The kernel may keep the port in TIME_WAIT; the apiserver sets
  // SO_REUSEADDR, so it can bind again at once.
  return start_apiserver();
}

Result<int64_t> ControlPlane::compact_etcd() {
  auto status = process::run(
      {bin("etcdctl"), "--endpoints=" + etcd_endpoint_, "endpoint", "status", "-w", "json"}, 10s);
  if (!status.ok()) return status.status();
  if (status->exit_code != 0) return internal_error("etcdctl endpoint status: " + status->err);
  auto json = nlohmann::json::parse(status->out, nullptr, false);
  if (json.is_discarded() || !json.is_array() || json.empty()) {
    return internal_error("etcdctl endpoint status: unexpected output " + status->out);
  }
  int64_t revision = json[0]["Status"]["header"]["revision"].get<int64_t>();
  auto compact = process::run({bin("etcdctl"), "--endpoints=" + etcd_endpoint_, "compact",
                               std::to_string(revision), "--physical"},
                              30s);
  if (!compact.ok()) return compact.status();
  if (compact->exit_code != 0) return internal_error("etcdctl compact: " + compact->err);
  return revision;
}

Result<process::Output> ControlPlane::kubectl(const std::vector<std::string>& args,
                                              const std::string& stdin_data) {
  std::vector<std::string> argv = {bin("kubectl"), "--kubeconfig=" + kubeconfig_path_};
  argv.insert(argv.end(), args.begin(), args.end());
  return process::run(argv, 60s, stdin_data);
}

namespace {
ControlPlane* g_control_plane = nullptr;
std::unique_ptr<ControlPlane> g_owned;
}  // namespace

void ControlPlaneEnvironment::SetUp() {
  auto cp = ControlPlane::start(options_);
  ASSERT_TRUE(cp.ok()) << "control plane did not start: " << cp.status().to_string();
  g_owned = std::move(cp).value();
  g_control_plane = g_owned.get();
}

void ControlPlaneEnvironment::TearDown() {
  g_control_plane = nullptr;
  g_owned.reset();
}

ControlPlane& ControlPlaneEnvironment::get() {
  if (g_control_plane == nullptr) {
    std::fprintf(stderr, "BUG: ControlPlaneEnvironment::get() outside SetUp/TearDown\n");
    std::abort();
  }
  return *g_control_plane;
}

}  // namespace ferry::testing
