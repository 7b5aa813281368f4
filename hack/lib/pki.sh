# Certificates and keys of one local cluster, made with openssl. Sourced.
# Keys are ECDSA P-256: quick to make, and accepted by every component,
# including kube-controller-manager's CSR signer.

pki_new_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null && chmod 600 "$1"; }

# pki_new_ca NAME CN
pki_new_ca() {
  pki_new_key "$pki_dir/$1.key"
  openssl req -x509 -new -key "$pki_dir/$1.key" -subj "/CN=$2" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$pki_dir/$1.crt" 2>/dev/null
}

# pki_new_cert NAME CA SUBJECT USAGE [SAN]
# USAGE is serverAuth or clientAuth; SAN an openssl subjectAltName value.
pki_new_cert() {
  local name=$1 ca=$2 subject=$3 usage=$4 san=${5:-}
  local ext="$pki_dir/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } > "$ext"
  pki_new_key "$pki_dir/$name.key"
  openssl req -new -key "$pki_dir/$name.key" -subj "$subject" -out "$pki_dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki_dir/$name.csr" -CA "$pki_dir/$ca.crt" -CAkey "$pki_dir/$ca.key" \
    -CAcreateserial -days 365 -extfile "$ext" -out "$pki_dir/$name.crt" 2>/dev/null
  rm -f "$pki_dir/$name.csr" "$ext"
}

# pki_kubeconfig FILE CLIENT_CERT_NAME
pki_kubeconfig() {
  local file=$1 client=$2
  cat > "$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: apiwitness-local
  cluster:
    server: https://${node_ip}:${apiserver_port}
    certificate-authority-data: $(base64 -w0 < "$pki_dir/ca.crt")
users:
- name: $client
  user:
    client-certificate-data: $(base64 -w0 < "$pki_dir/$client.crt")
    client-key-data: $(base64 -w0 < "$pki_dir/$client.key")
contexts:
- name: apiwitness-local
  context:
    cluster: apiwitness-local
    user: $client
current-context: apiwitness-local
KUBECONFIG
  chmod 600 "$file"
}

pki_generate() {
  rm -rf "$pki_dir"
  mkdir -p "$pki_dir"
  chmod 700 "$pki_dir"
  pki_new_ca ca "apiwitness-local-ca"
  pki_new_ca front-proxy-ca "apiwitness-local-front-proxy-ca"
  pki_new_cert apiserver ca "/CN=kube-apiserver" serverAuth \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.${cluster_domain},DNS:localhost,IP:127.0.0.1,IP:${kubernetes_service_ip},IP:${node_ip}"
  pki_new_cert admin ca "/O=system:masters/CN=kubernetes-admin" clientAuth
  pki_new_cert controller-manager ca "/CN=system:kube-controller-manager" clientAuth
  pki_new_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
  openssl genrsa -out "$pki_dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki_dir/sa.key" -pubout -out "$pki_dir/sa.pub" 2>/dev/null
  chmod 600 "$pki_dir/sa.key"
  pki_kubeconfig "$admin_kubeconfig" admin
  pki_kubeconfig "$state_dir/controller-manager.kubeconfig" controller-manager
}
