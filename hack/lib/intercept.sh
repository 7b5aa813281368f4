# What the injector's certify endpoint does for a pod, done by hand for the
# demo: a serving certificate for the apiserver's names from a real
# CertificateSigningRequest. Sourced after common.sh; needs kubectl_admin (and
# so $bin_dir).

interceptor_uid=2102

# issue_interceptor_cert DIR NAME: DIR/tls.key and DIR/tls.crt, signed by the
# cluster CA through the kubelet-serving signer.
issue_interceptor_cert() {
  local dir=$1 name=$2
  mkdir -p "$dir"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/tls.key" 2>/dev/null
  openssl req -new -key "$dir/tls.key" -subj "/O=system:nodes/CN=system:node:apiwitness:$name" \
    -addext "subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.${cluster_domain},IP:${kubernetes_service_ip},IP:127.0.0.1" \
    -out "$dir/tls.csr" 2>/dev/null
  local csr="apiwitness-demo-$name"
  kubectl_admin delete csr "$csr" --ignore-not-found >/dev/null
  kubectl_admin create -f - >/dev/null <<CSR
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: $csr}
spec:
  signerName: kubernetes.io/kubelet-serving
  usages: [digital signature, server auth]
  expirationSeconds: 3600
  request: $(base64 -w0 < "$dir/tls.csr")
CSR
  kubectl_admin certificate approve "$csr" >/dev/null
  local i
  for i in $(seq 1 100); do
    kubectl_admin get csr "$csr" -o jsonpath='{.status.certificate}' | base64 -d > "$dir/tls.crt" 2>/dev/null || true
    [ -s "$dir/tls.crt" ] && break
    sleep 0.2
  done
  kubectl_admin delete csr "$csr" >/dev/null
  [ -s "$dir/tls.crt" ] || die "the controller-manager did not sign the interceptor's CSR"
  # The sidecar runs as its own UID and must read its key.
  chown "$interceptor_uid:$interceptor_uid" "$dir" "$dir"/tls.*
  chmod 0400 "$dir/tls.key"
}
