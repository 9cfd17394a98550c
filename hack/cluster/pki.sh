#!/usr/bin/env bash
# Generates the local cluster's own PKI with the openssl CLI (no kubeadm, no
# cfssl): one CA, the apiserver's serving certificate, client certificates
# for every component and node, the service-account key pair, and the
# kubeconfigs that embed them. Everything lands in .cache/cluster/ (git-
# ignored). Idempotent: regenerated only when missing or when the addresses
# or node names it was made for changed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

params="gateway=$FERRY_GATEWAY_IP port=$FERRY_APISERVER_PORT svc=$FERRY_APISERVER_SERVICE_IP nodes=$(node_names | tr '\n' ,)"
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXTKEYUSAGE [SAN]: NAME.key + NAME.crt signed by the CA.
sign() {
  local name="$1" subj="$2" eku="$3" san="${4:-}"
  newkey "$name.key"
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

certificates() {
  log "pki: generating CA and certificates in ${PKI_DIR#"$FERRY_ROOT"/}"
  rm -rf "$PKI_DIR"
  mkdir -p "$PKI_DIR"
  cd "$PKI_DIR"
  newkey ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=ferry-cluster-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt 2>/dev/null

  sign apiserver "/CN=kube-apiserver" serverAuth \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$FERRY_GATEWAY_IP,IP:$FERRY_APISERVER_SERVICE_IP"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  sign admin "/O=system:masters/CN=kubernetes-admin" clientAuth
  sign controller-manager "/CN=system:kube-controller-manager" clientAuth
  sign scheduler "/CN=system:kube-scheduler" clientAuth
  sign kube-proxy "/CN=system:kube-proxy" clientAuth
  for n in $(node_names); do
    sign "node-$n" "/O=system:nodes/CN=system:node:$n" clientAuth
  done
  newkey sa.key
  openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
  chmod 600 ./*.key
  echo "$params" >.params
}

# kubeconfig OUT NAME USER: a self-contained kubeconfig for NAME.crt/key.
kubeconfig() {
  local out="$1" name="$2" user="$3"
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ferry
  cluster:
    server: https://$FERRY_GATEWAY_IP:$FERRY_APISERVER_PORT
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$name.crt")
    client-key-data: $(base64 -w0 "$name.key")
contexts:
- name: ferry
  context:
    cluster: ferry
    user: $user
current-context: ferry
EOF
  chmod 600 "$out"
}
if [[ ! -f "$PKI_DIR/.params" || "$(cat "$PKI_DIR/.params")" != "$params" ]]; then
  certificates
fi
cd "$PKI_DIR"
# The kubeconfigs are rewritten every time (cheap): cluster-down deletes the
# admin one.
kubeconfig controller-manager.kubeconfig controller-manager system:kube-controller-manager
kubeconfig scheduler.kubeconfig scheduler system:kube-scheduler
kubeconfig kube-proxy.kubeconfig kube-proxy system:kube-proxy
for n in $(node_names); do kubeconfig "node-$n.kubeconfig" "node-$n" "system:node:$n"; done
kubeconfig "$KUBECONFIG_PATH.tmp" admin kubernetes-admin
mv "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"
